"""nnUNetv2_vismae_convert: timm and VIS-MAE layouts -> encoder checkpoints that compute the same."""

import argparse
import hashlib
import os
import re
import stat

import pytest
import torch
import torch.nn.functional as F
from timm.models.swin_transformer import PatchMerging, SwinTransformer

from nnunetv2_vismae.architectures.swin_encoder import SwinEncoder, SwinEncoderConfig
from nnunetv2_vismae.architectures.swin_unet import SwinUNet
from nnunetv2_vismae.checkpoint import LoadReport, load_encoder_into, read_encoder_checkpoint
from nnunetv2_vismae.checkpoint import foreign_layouts
from nnunetv2_vismae.checkpoint.convert import main
from nnunetv2_vismae.checkpoint.foreign_layouts import (
    ORIGINAL_MERGE_ORDER,
    float32_copies,
    fold_input_channels,
    map_to_encoder_names,
)

TIMM_SMALL = dict(
    img_size=224,
    patch_size=4,
    in_chans=3,
    embed_dim=24,
    depths=(1, 1, 3, 1),
    num_heads=(1, 2, 3, 4),
    window_size=7,
    mlp_ratio=2.0,
    num_classes=5,
)  # stock timm layout
MAE_EXTRAS = (
    "mask_token",
    "pos_embed",
    "first_patch_expanding",
    "layers_up",
    "norm_up",
    "decoder_pred",
    "relative_position_index (buffers)",
)


@pytest.fixture(scope="module")
def timm_model():
    torch.manual_seed(0)
    model = SwinTransformer(**TIMM_SMALL).eval()
    with torch.no_grad():  # non-trivial norms, so a misplaced norm tensor shows in the outputs
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.3 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def image():
    torch.manual_seed(1)
    return torch.randn(2, 3, 224, 224)  # the size stock timm (strict) and the original Swin ran at


def _timm_stages(model, x, norm=True):
    with torch.no_grad():
        return model.forward_intermediates(x, norm=norm, intermediates_only=True)


def _converted_encoder(path):
    checkpoint = read_encoder_checkpoint(path)
    encoder = SwinEncoder.from_config(SwinEncoderConfig.from_json(checkpoint.encoder_config)).eval()
    encoder.load_state_dict(checkpoint.tensors)
    return encoder, checkpoint


def _assert_same(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def _end_layout(state):
    """timm names -> merging at the end of stage i (layers.{i+1}.downsample -> layers.{i})."""
    out = {}
    for name, value in state.items():
        m = re.match(r"layers\.(\d+)\.downsample\.(.*)", name)
        out[f"layers.{int(m.group(1)) - 1}.downsample.{m.group(2)}" if m else name] = value.clone()
    return out


def _vismae_file(path, timm_state, with_norm=False):
    """A VIS-MAE / Swin-MAE pretraining file: torch.save of {'model': ..., 'optimizer', ...}."""
    model = {
        k: v
        for k, v in _end_layout(timm_state).items()
        if not k.startswith("head.") and (with_norm or not k.startswith("norm."))
    }
    for name in [k for k in model if k.endswith("attn.relative_position_bias_table")]:
        model[name.replace("bias_table", "index")] = torch.zeros(49, 49, dtype=torch.long)
    model.update(
        {
            "mask_token": torch.zeros(1, 1, 24),
            "pos_embed": torch.randn(1, 56 * 56, 24),
            "first_patch_expanding.expand.weight": torch.randn(192, 192),
            "layers_up.0.blocks.0.norm1.weight": torch.randn(96),
            "layers_up.0.upsample.expand.weight": torch.randn(96, 96),
            "norm_up.weight": torch.randn(24),
            "decoder_pred.weight": torch.randn(48, 24),
            "decoder_pred.bias": torch.randn(48),
        }
    )
    args = argparse.Namespace(
        model="swin_mae", input_size=224, mask_ratio=0.75, lr=1e-3, norm_pix_loss=False, output_dir="./output_dir"
    )
    torch.save({"model": model, "optimizer": {}, "epoch": 5, "scaler": {}, "args": args}, path)
    return model


# ------------------------------------------------------------------------------ patch merging
def _original_merge(x, norm_w, norm_b, reduction_w, order=ORIGINAL_MERGE_ORDER):
    """Reference Swin patch merging with an explicit neighbour order (B x H x W x C)."""
    parts = [x[:, r::2, c::2] for r, c in order]
    merged = torch.cat(parts, dim=-1)
    merged = F.layer_norm(merged, merged.shape[-1:], norm_w, norm_b)
    return merged @ reduction_w.t()


def _merging_state(c: int) -> dict:
    """A VIS-MAE-layout patch merging at the end of stage 0, plus one tensor of stage 1."""
    return {
        "layers.0.downsample.norm.weight": torch.randn(4 * c),
        "layers.0.downsample.norm.bias": torch.randn(4 * c),
        "layers.0.downsample.reduction.weight": torch.randn(2 * c, 4 * c),
        "layers.1.blocks.0.norm1.weight": torch.randn(2 * c),
    }


def test_timm_patch_merging_uses_the_original_swin_neighbour_order():
    assert foreign_layouts.timm_merge_order() == ORIGINAL_MERGE_ORDER
    torch.manual_seed(2)
    c = 5
    state = _merging_state(c)
    mapped = float32_copies(map_to_encoder_names(state, "vismae"))
    merge = PatchMerging(c)
    merge.load_state_dict(
        {k.removeprefix("layers.1.downsample."): v for k, v in mapped.items() if k.startswith("layers.1.downsample.")}
    )
    x = torch.randn(2, 6, 8, c)
    with torch.no_grad():
        torch.testing.assert_close(merge(x), _original_merge(x, *(state[k] for k in list(state)[:3])))


def test_a_different_merge_order_is_permuted(monkeypatch):
    other = ((0, 0), (0, 1), (1, 0), (1, 1))
    monkeypatch.setattr(foreign_layouts, "timm_merge_order", lambda: other)
    torch.manual_seed(3)
    c = 3
    state = _merging_state(c)
    result = map_to_encoder_names(state, "vismae")
    assert result.merge_permuted
    m = float32_copies(result)
    x = torch.randn(1, 4, 4, c)
    expected = _original_merge(x, *(state[k] for k in list(state)[:3]))
    got = _original_merge(
        x,
        m["layers.1.downsample.norm.weight"],
        m["layers.1.downsample.norm.bias"],
        m["layers.1.downsample.reduction.weight"],
        order=other,
    )
    torch.testing.assert_close(got, expected)


# --------------------------------------------------------------------------------------- timm
@pytest.mark.parametrize("container", ["pth", "safetensors"])
def test_timm_state_dict_converts_exactly(tmp_path, timm_model, image, container, capsys):
    state = timm_model.state_dict()
    source = tmp_path / f"swin.{'safetensors' if container == 'safetensors' else 'pth'}"
    if container == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, source)
    else:
        torch.save(state, source)
    out = tmp_path / "encoder.safetensors"
    assert main(["--from", "timm", str(source), str(out), "--in-channels", "3"]) == 0
    printed = capsys.readouterr().out
    assert "93/93 encoder tensors (100.0%), 0 adapted, 0 missing, 0 unexpected" in printed

    encoder, checkpoint = _converted_encoder(out)
    assert checkpoint.encoder_config == {
        "in_channels": 3,
        "patch_size": 4,
        "embed_dim": 24,
        "depths": [1, 1, 3, 1],
        "num_heads": [1, 2, 3, 4],
        "window_size": 7,
        "mlp_ratio": 2.0,
        "drop_path_rate": 0.1,
        "shift_single_window_stages": False,
        "final_norm": True,
    }  # timm's rule: no shift in the one-window last stage; timm's final norm
    record = checkpoint.metadata["converted_from"]
    assert record["layout"] == "timm" and record["file"] == source.name
    assert record["dropped"] == {"head": 2}
    assert record["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert re.match(r"\d{4}-\d\d-\d\dT", record["converted_at"])
    assert checkpoint.normalization["scheme"] == "imagenet_rgb"
    with torch.no_grad():
        _assert_same(encoder(image), _timm_stages(timm_model, image))
    assert main([str(out), str(tmp_path / "again.safetensors")]) == 2
    assert "already an nnunetv2_vismae encoder checkpoint" in capsys.readouterr().err


def test_default_in_channels_1_matches_timm_on_the_3_channel_copy(tmp_path, timm_model, image):
    source, out = tmp_path / "swin.pth", tmp_path / "encoder.safetensors"
    torch.save(timm_model.state_dict(), source)
    assert main(["--from", "auto", str(source), str(out)]) == 0
    encoder, checkpoint = _converted_encoder(out)
    assert checkpoint.encoder_config["in_channels"] == 1
    norm = checkpoint.normalization
    assert norm["scheme"] == "imagenet_rgb_folded" and norm["mean"] == [0.485, 0.456, 0.406]
    gray = image[:, :1]
    with torch.no_grad():
        _assert_same(encoder(gray), _timm_stages(timm_model, gray.repeat(1, 3, 1, 1)))


def test_a_converted_checkpoint_of_the_longest_name_has_a_new_files_mode(tmp_path, timm_model):
    source, out = tmp_path / "swin.pth", tmp_path / ("e" * 235 + ".safetensors")  # 247 characters
    torch.save(timm_model.state_dict(), source)
    previous = os.umask(0o022)
    try:
        assert main(["--from", "timm", str(source), str(out)]) == 0
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o644 and sorted(os.listdir(tmp_path)) == sorted(
        [source.name, out.name]
    )


def test_older_timm_layout_with_merging_at_the_end_of_stages(tmp_path, timm_model, image):
    source, out = tmp_path / "old_swin.pth", tmp_path / "encoder.safetensors"
    state = _end_layout(timm_model.state_dict())
    state["layers.1.blocks.0.attn_mask"] = torch.zeros(4, 49, 49)
    torch.save({"state_dict": state, "epoch": 3}, source)
    assert main([str(source), str(out), "--in-channels", "3"]) == 0
    encoder, checkpoint = _converted_encoder(out)
    record = checkpoint.metadata["converted_from"]
    assert record["layout"] == "timm" and record["patch_merging"].startswith("moved")
    assert record["dropped"] == {"attn_mask (buffers)": 1, "head": 2}
    with torch.no_grad():
        _assert_same(encoder(image), _timm_stages(timm_model, image))


# ------------------------------------------------------------------------------------- VIS-MAE
def test_vismae_file_maps_every_tensor_where_the_layout_says(tmp_path, timm_model, image, capsys):
    path, out = tmp_path / "checkpoint-799.pth", tmp_path / "encoder.safetensors"
    model = _vismae_file(path, timm_model.state_dict())
    assert main(["--from", "vismae", str(path), str(out), "--in-channels", "3"]) == 0
    printed = capsys.readouterr().out
    assert "No final encoder norm in the source" in printed and "100.0%" in printed

    encoder, checkpoint = _converted_encoder(out)
    tensors = checkpoint.tensors
    for i in range(3):  # the merging at the end of stage i is the one before stage i+1
        for part in ("norm.weight", "norm.bias", "reduction.weight"):
            assert torch.equal(tensors[f"layers.{i + 1}.downsample.{part}"], model[f"layers.{i}.downsample.{part}"])
    assert not any(k.startswith("layers.0.downsample") for k in tensors)
    for name in [k for k in model if k.startswith("layers.") and ".blocks." in k and not k.endswith("index")]:
        assert torch.equal(tensors[name], model[name]), name
    assert not any(k.startswith("norm.") for k in tensors)
    assert checkpoint.encoder_config["final_norm"] is False

    record = checkpoint.metadata["converted_from"]
    assert record["layout"] == "vismae" and record["detected_layout"] == "vismae"
    assert set(record["dropped"]) == set(MAE_EXTRAS)
    assert record["epoch"] == 5 and record["args"]["mask_ratio"] == 0.75
    assert checkpoint.normalization["scheme"] == "imagenet_rgb"

    with torch.no_grad():
        ours = encoder(image)
    _assert_same(ours, _timm_stages(timm_model, image, norm=False))  # the original has no final norm


def test_vismae_default_folds_rgb_and_loads_fully_via_the_plan_logic(tmp_path, timm_model, image):
    path, out = tmp_path / "vismae.pth", tmp_path / "encoder.safetensors"
    model = _vismae_file(path, timm_model.state_dict(), with_norm=True)
    assert main([str(path), str(out)]) == 0
    checkpoint = read_encoder_checkpoint(out)
    assert torch.allclose(
        checkpoint.tensors["patch_embed.proj.weight"], model["patch_embed.proj.weight"].sum(1, keepdim=True)
    )
    assert torch.equal(checkpoint.tensors["norm.weight"], model["norm.weight"])
    record = checkpoint.metadata["converted_from"]
    assert record["layout"] == record["detected_layout"] == "vismae"
    assert checkpoint.encoder_config["final_norm"] is True  # a file with a final norm keeps it
    norm = checkpoint.normalization
    assert norm["scheme"] == "imagenet_rgb_folded" and norm["in_channels"] == 1

    config = SwinEncoderConfig.from_json(checkpoint.encoder_config)  # as planning reads it
    network = SwinUNet(1, 3, encoder=config.to_json(), decoder="swin")
    report = load_encoder_into(network, out, log=lambda s: None)
    assert report.fraction_loaded == 1.0 and not report.adapted and not report.unexpected
    gray = image[:, :1]
    with torch.no_grad():
        _assert_same(network.encoder.eval()(gray), _timm_stages(timm_model, gray.repeat(1, 3, 1, 1)))


def test_folding_to_n_channels_keeps_the_response_to_a_repeated_gray_image():
    torch.manual_seed(4)
    weight, gray = torch.randn(6, 3, 4, 4), torch.randn(1, 1, 8, 8)
    reference = F.conv2d(gray.repeat(1, 3, 1, 1), weight, stride=4)
    for n in (1, 2, 5):
        folded = fold_input_channels(weight, n)
        assert folded.shape == (6, n, 4, 4)
        torch.testing.assert_close(F.conv2d(gray.repeat(1, n, 1, 1), folded, stride=4), reference)
    assert torch.equal(fold_input_channels(weight, 2)[:, 0], fold_input_channels(weight, 2)[:, 1])


# ------------------------------------------------------------------------------------ refusals
class _Marker:
    """An object whose unpickling would create a file: the code execution a checkpoint must not do."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_malicious_pickle_is_refused_and_never_executed(tmp_path, capsys):
    marker = tmp_path / "pwned"
    source, out = tmp_path / "evil.pth", tmp_path / "encoder.safetensors"
    torch.save({"model": {"patch_embed.proj.weight": torch.zeros(1)}, "epoch": 1, "args": _Marker(str(marker))}, source)
    assert not marker.exists()
    assert main(["--from", "vismae", str(source), str(out)]) == 2
    err = capsys.readouterr().err
    assert "refused" in err and "open" in err and "weights_only=True" in err
    assert len(err.strip().splitlines()) == 1
    assert not marker.exists() and not out.exists()


class _ValuesNeverRead(torch.Tensor):
    """A tensor whose shape may be read but whose values must not be touched (no copy, no view)."""

    SHAPE_ONLY = (torch.Tensor.shape.__get__, torch.Tensor.ndim.__get__, torch.Tensor.dim, torch.Tensor.numel)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func not in cls.SHAPE_ONLY:
            raise AssertionError(f"the values of a refused tensor were used ({func})")
        return super().__torch_function__(func, types, args, kwargs or {})


def test_a_file_of_repeated_views_is_refused_before_its_values_are_copied(tmp_path, timm_model, capsys):
    """Issue 29: torch.save of an expanded view stores one value; the 3e9 values it claims were copied."""
    source, out = tmp_path / "crafted.pth", tmp_path / "encoder.safetensors"
    torch.save({k: torch.zeros(1, dtype=v.dtype).expand(v.shape) for k, v in timm_model.state_dict().items()}, source)
    assert main([str(source), str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{source} is refused: its 95 tensors claim 648,597 values, more than its " in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


@pytest.mark.parametrize("claimed", [(3_000_000_000,), (72, 23)])
def test_a_tensor_of_the_wrong_shape_is_refused_by_its_shape_before_any_copy(
    tmp_path, timm_model, monkeypatch, capsys, claimed
):
    from nnunetv2_vismae.checkpoint.foreign_files import ForeignFile

    source, out = tmp_path / "swin.pth", tmp_path / "encoder.safetensors"
    torch.save(timm_model.state_dict(), source)
    state = dict(timm_model.state_dict())
    state["layers.0.blocks.0.attn.qkv.weight"] = torch.ones(1).expand(claimed).as_subclass(_ValuesNeverRead)
    monkeypatch.setattr(
        "nnunetv2_vismae.checkpoint.foreign_files.read_foreign_file", lambda path: ForeignFile(state, "torch.save")
    )
    assert main([str(source), str(out)]) == 2
    err = capsys.readouterr().err
    assert f"layers.0.blocks.0.attn.qkv.weight is {list(claimed)}, expected [72, 24]" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_help_names_the_layouts_and_in_channels(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "nnUNetv2_vismae_convert" in text and "{vismae,timm,nnssl,monai,auto}" in text
    assert "--in-channels N" in text and "--merge-order" in text


def test_timm_flag_on_a_vismae_file_is_refused_with_a_hint(tmp_path, timm_model, capsys):
    path, out = tmp_path / "vismae.pth", tmp_path / "encoder.safetensors"
    _vismae_file(path, timm_model.state_dict())
    assert main(["--from", "timm", str(path), str(out)]) == 2
    err = capsys.readouterr().err
    assert "--from vismae" in err and not out.exists()


def test_not_a_swin_state_dict_is_refused(tmp_path, capsys):
    source, out = tmp_path / "resnet.pth", tmp_path / "encoder.safetensors"
    torch.save({"conv1.weight": torch.zeros(8, 3, 7, 7)}, source)
    assert main([str(source), str(out)]) == 2
    assert "not a Swin Transformer state dict" in capsys.readouterr().err
    assert not out.exists()


def test_failed_verification_writes_nothing(tmp_path, timm_model, monkeypatch, capsys):
    out = tmp_path / "encoder.safetensors"
    out.write_bytes(b"previous")
    source = tmp_path / "swin.pth"
    torch.save(timm_model.state_dict(), source)

    def partial_load(network, checkpoint, log=print, **kw):
        return LoadReport(
            checkpoint="x",
            family="swin",
            content_hash="0" * 64,
            num_network_tensors=93,
            loaded=["a"] * 92,
            missing=["norm.bias"],
        )

    monkeypatch.setattr("nnunetv2_vismae.checkpoint.loader.load_encoder_into", partial_load)
    assert main([str(source), str(out)]) == 2
    assert "Verification failed" in capsys.readouterr().err
    assert out.read_bytes() == b"previous"
    assert sorted(os.listdir(tmp_path)) == ["encoder.safetensors", "swin.pth"]


# ---------------------------------------------------------------------------------- shift rule
@pytest.fixture(scope="module")
def two_block_last_stage():
    """A Swin whose 7x7 last stage (at 224) has an odd block: where the two shift rules differ."""
    torch.manual_seed(5)
    model = SwinTransformer(**{**TIMM_SMALL, "depths": (1, 1, 1, 2)}).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("relative_position_bias_table", "qkv.bias")) or "norm" in name:
                p.add_(torch.randn_like(p))
    return model


def test_vismae_weights_compute_the_original_function_at_224(tmp_path, two_block_last_stage, image):
    """Issues 17 and 29: converted VIS-MAE weights differed from the original code at the deepest
    stage (the shift rule, then a final norm the original encoder does not have)."""
    from tests.architectures.original_swin import original_stages

    path, out = tmp_path / "vismae.pth", tmp_path / "encoder.safetensors"
    _vismae_file(path, two_block_last_stage.state_dict())  # as the original saves it: no final norm
    assert main([str(path), str(out), "--in-channels", "3"]) == 0
    encoder, checkpoint = _converted_encoder(out)
    assert checkpoint.encoder_config["shift_single_window_stages"] is True
    assert checkpoint.encoder_config["final_norm"] is False and "norm.weight" not in checkpoint.tensors
    with torch.no_grad():
        original = original_stages(two_block_last_stage, image, window=7)
        _assert_same(encoder(image), original)

    timm_out = tmp_path / "timm.safetensors"
    torch.save(two_block_last_stage.state_dict(), tmp_path / "swin.pth")
    assert main(["--from", "timm", str(tmp_path / "swin.pth"), str(timm_out), "--in-channels", "3"]) == 0
    timm_encoder, timm_checkpoint = _converted_encoder(timm_out)
    assert timm_checkpoint.encoder_config["shift_single_window_stages"] is False
    with torch.no_grad():
        _assert_same(timm_encoder(image), _timm_stages(two_block_last_stage, image))
        assert not torch.allclose(timm_encoder(image)[3], original[3], atol=1e-3)


def test_the_shift_rule_and_final_norm_travel_from_the_checkpoint_through_the_plans(tmp_path, two_block_last_stage):
    from nnunetv2_vismae.checkpoint.reference import checkpoint_reference
    from nnunetv2_vismae.planning.families import PlanRequest, planning_of

    path, out = tmp_path / "vismae.pth", tmp_path / "encoder.safetensors"
    _vismae_file(path, two_block_last_stage.state_dict())
    assert main([str(path), str(out)]) == 0
    checkpoint = read_encoder_checkpoint(out)
    assert SwinEncoderConfig.from_json(checkpoint.encoder_config).shift_single_window_stages is True
    plans = {
        "plans_name": "nnUNetPlans",
        "configurations": {"2d": {"patch_size": [224, 224], "batch_size": 2, "architecture": {}}},
    }
    request = PlanRequest(
        plans, "nnUNetPlans", "nnUNetVisMAEPlans", tmp_path, "swin", checkpoint, checkpoint_reference(out, checkpoint)
    )
    arch = planning_of(checkpoint.family).derive(request)["configurations"]["2d"]["architecture"]
    assert arch["arch_kwargs"]["encoder"]["shift_single_window_stages"] is True
    assert arch["arch_kwargs"]["encoder"]["final_norm"] is False  # the VIS-MAE encoder's deepest stage is raw
    network = SwinUNet(1, 2, **arch["arch_kwargs"])  # as get_network_from_plans builds it
    assert network.encoder.layers[3].blocks[1].shift_size == (3, 3)
    assert isinstance(network.encoder.norm, torch.nn.Identity)
    assert load_encoder_into(network, out, log=lambda s: None).fraction_loaded == 1.0


def test_foreign_weights_are_held_to_the_checkpoint_bounds_before_anything_is_built(timm_model):
    from nnunetv2_vismae.checkpoint import CheckpointError

    tensors = {k: v for k, v in timm_model.state_dict().items() if not k.startswith("head")}
    for name in [k for k in tensors if k.endswith("relative_position_bias_table")]:
        tensors[name] = torch.zeros((2 * 65 - 1) ** 2, tensors[name].shape[1])  # a 65x65 window
    with pytest.raises(
        CheckpointError,
        match=r"^Input weights x: its tensors imply an encoder config outside the "
        r"checkpoint schema: encoder_config\.window_size is 65, expected an "
        r"integer from 1 to 64; SwinEncoder cannot hold these weights\.$",
    ):
        foreign_layouts.derive_swin_config(tensors, "Input weights x")


# ------------------------------------------------------------------------------ golden outputs
# (layout, --in-channels) -> (content hash of the tensors, metadata hash but the conversion's time and the source
# file's sha256, which torch.save's version decides); the inputs hold small integers, exact on every CPU
GOLDEN_CONVERSIONS = {
    ("timm", 1): (
        "61b7d928f311a2f6a117c54ff3619ccf0a8152470f1fe35409c3ae971f404d84",
        "4349aef408fb49dc45cf928601811b9f4ead9d25d0f896228305e793a9cee292",
    ),
    ("vismae", 2): (
        "a43950a3497a973665473e9ddaad53c7cae1da93162ed0bf2b9e4006b401382c",
        "e08e1c23afe3384cb82da262c583d3f305e65fefb386071b8f97754868fc4a63",
    ),
}


def _integer_valued(state: dict) -> dict:
    """The same names and shapes, each tensor a different run of small integers."""
    return {
        name: ((torch.arange(v.numel()) + i) % 11 - 5).to(v.dtype).reshape(v.shape)
        for i, (name, v) in enumerate(sorted(state.items()))
    }


def _hashes_of_the_conversion(path) -> tuple[str, str]:
    from nnunetv2_vismae.checkpoint.format import metadata_hash

    checkpoint = read_encoder_checkpoint(path)
    record = {k: v for k, v in checkpoint.metadata["converted_from"].items() if k not in ("converted_at", "sha256")}
    return checkpoint.content_hash, metadata_hash({**checkpoint.metadata, "converted_from": record})


@pytest.mark.parametrize("layout, in_channels", list(GOLDEN_CONVERSIONS))
def test_conversions_are_the_golden_ones(tmp_path, timm_model, layout, in_channels):
    source, out = tmp_path / "swin.pth", tmp_path / "encoder.safetensors"
    state = _integer_valued(timm_model.state_dict())
    if layout == "vismae":
        _vismae_file(source, state)
    else:
        torch.save(state, source)
    assert main(["--from", layout, str(source), str(out), "--in-channels", str(in_channels)]) == 0
    assert _hashes_of_the_conversion(out) == GOLDEN_CONVERSIONS[layout, in_channels]
