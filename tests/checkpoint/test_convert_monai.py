"""nnUNetv2_vismae_convert --from monai: MONAI SwinUNETR weights, saved the ways SwinUNETR, its self-supervised
pretraining (research-contributions' SwinUNETR/Pretrain SSLHead) and the public model_swinvit.pt save them,
-> 3D Swin encoder checkpoints whose encoder computes MONAI's swinViT(x, normalize=True) stage outputs.
MONAI is a test dependency; its random weights, nothing downloaded."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from nnunetv2_vismae.architectures.swin3d_encoder import (
    Swin3dEncoder,
    Swin3dEncoderConfig,
    monai_to_ours,
    relative_position_index,
)
from nnunetv2_vismae.checkpoint import read_encoder_checkpoint
from nnunetv2_vismae.checkpoint.cli import main as inspect_main
from nnunetv2_vismae.checkpoint.convert import main
from nnunetv2_vismae.checkpoint.families import SWIN3D
from nnunetv2_vismae.checkpoint.monai_swin import DEFAULT_MERGE_ORDER, HATAMIZADEH, INDEX, TANG, windows_of

from ..architectures.test_swin3d_encoder import MONAI_MERGING, TIGHT, randomized
from .test_convert_nnssl import _Marker

monai_nets = pytest.importorskip("monai.networks.nets", reason="MONAI is a test dependency: pip install -e .[test]")
warnings.filterwarnings("ignore", category=FutureWarning)

# a small SwinUNETR whose windows MONAI keeps at SIZE (tokens 32x24x24 ... 4x3x3 in 3x2x2 windows, padded)
WINDOW, SIZE = (3, 2, 2), (64, 48, 48)


@pytest.fixture(scope="module")
def swinunetr():
    net = monai_nets.SwinUNETR(2, 3, feature_size=12, num_heads=(3, 3, 3, 3), window_size=WINDOW)
    return randomized(net).eval()  # float32 draws held in float64: the converted float32 copy is exact


class SSLHeadLike(nn.Module):
    """research-contributions' SSLHead, as far as its state dict goes: swinViT and the three pretext heads."""

    def __init__(self, swin_vit: nn.Module):
        super().__init__()
        self.swinViT = swin_vit
        self.rotation_head = nn.Linear(96, 4)
        self.contrastive_head = nn.Linear(96, 512)
        self.conv = nn.Sequential(nn.Conv3d(96, 48, 3), nn.InstanceNorm3d(48), nn.Conv3d(48, 2, 1))


def ssl_checkpoint(model: nn.Module, in_ddp: bool) -> dict:
    """What SwinUNETR/Pretrain's main.py saves: epoch, the (DDP) model's state dict, the optimizer's."""
    heads = SSLHeadLike(model.swinViT)
    state = {("module." if in_ddp else "") + k: v for k, v in heads.state_dict().items()}
    return {"epoch": 3, "state_dict": state, "optimizer": torch.optim.AdamW(heads.parameters()).state_dict()}


def public_swinvit(model: nn.Module, prefix: str = "") -> dict:
    """model_swinvit.pt as MONAI's SwinUNETR.load_from reads it: module.<encoder key>, MLP named fc1 / fc2."""
    state = model.swinViT.state_dict()
    tang = {k.replace(".mlp.linear1.", ".mlp.fc1.").replace(".mlp.linear2.", ".mlp.fc2."): v for k, v in state.items()}
    return {"state_dict": {f"module.{prefix}{k}": v for k, v in tang.items()}}


def ddp(state: dict) -> dict:
    return {f"module.{k}": v for k, v in state.items()}


LAYOUTS = {  # name -> (what is saved, encoder prefix, Tang et al.'s pretraining)
    "swinunetr": (lambda m: m.state_dict(), "swinViT.", False),
    "swinunetr-ddp": (lambda m: {"state_dict": ddp(m.state_dict())}, "swinViT.", False),
    "ssl": (lambda m: ssl_checkpoint(m, in_ddp=False), "swinViT.", True),
    "ssl-ddp": (lambda m: ssl_checkpoint(m, in_ddp=True), "swinViT.", True),
    "model_swinvit": (public_swinvit, "", True),
    "btcv-swin_vit": (lambda m: public_swinvit(m, "swin_vit."), "swin_vit.", True),  # the name BTCV renames
}


def convert(tmp_path, capsys, saved, *flags):
    source, out = tmp_path / "weights.pt", tmp_path / "encoder.safetensors"
    torch.save(saved, source)
    code = main(["--from", "monai", str(source), str(out), *flags])
    return code, out, capsys.readouterr()


def converted_encoder(path) -> Swin3dEncoder:
    checkpoint = read_encoder_checkpoint(path)
    encoder = Swin3dEncoder(Swin3dEncoderConfig.from_json(checkpoint.encoder_config)).double().eval()
    encoder.load_state_dict(checkpoint.tensors, strict=True)
    return encoder


def stage_outputs(swinunetr, encoder, x):
    with torch.no_grad():
        return swinunetr.swinViT(x, normalize=True), encoder(x)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_layout_converts_to_the_encoders_tensors_and_config(tmp_path, capsys, swinunetr, layout):
    save, prefix, pretraining = LAYOUTS[layout]
    code, out, captured = convert(tmp_path, capsys, save(swinunetr), "--merge-order", MONAI_MERGING)
    assert code == 0, captured.err
    checkpoint = read_encoder_checkpoint(out)
    expected = monai_to_ours(swinunetr.swinViT.state_dict())
    assert set(checkpoint.tensors) == set(expected)
    assert all(torch.equal(checkpoint.tensors[k], v.float()) for k, v in expected.items())
    meta = checkpoint.metadata
    assert meta["family"] == SWIN3D.name and meta["spatial_dims"] == 3
    assert meta["encoder_config"] == {
        "in_channels": 2,
        "patch_size": [2, 2, 2],
        "embed_dim": 12,
        "depths": [2, 2, 2, 2],
        "num_heads": [3, 3, 3, 3],
        "window_size": list(WINDOW),
        "mlp_ratio": 4.0,
        "drop_path_rate": 0.0,
        "normalize_outputs": True,
        "merge_offsets": MONAI_MERGING,
    }
    record = meta["converted_from"]
    assert record["layout"] == "monai" and record["encoder_prefix"] == prefix
    assert record["merge_order"] == MONAI_MERGING and record["merge_order_from"] == "--merge-order"
    assert meta["normalization"]["scheme"] == ("ct" if pretraining else "zscore")
    assert (TANG in meta["citations"][0]["apa_citations"]) == pretraining


def test_the_converted_encoder_computes_monais_stage_outputs(tmp_path, capsys, swinunetr):
    """The public model_swinvit.pt's layout (DDP prefix, Tang et al.'s MLP names), in the installed MONAI's
    merge order: every returned map equals MONAI's swinViT(x, normalize=True) in float64."""
    code, out, captured = convert(tmp_path, capsys, public_swinvit(swinunetr), "--merge-order", MONAI_MERGING)
    assert code == 0, captured.err
    torch.manual_seed(2)
    theirs, ours = stage_outputs(swinunetr, converted_encoder(out), torch.randn(1, 2, *SIZE, dtype=torch.double))
    assert len(theirs) == len(ours) == 5
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, **TIGHT)


def test_the_ssl_checkpoint_drops_the_heads_and_expects_tangs_ct_window(tmp_path, capsys, swinunetr):
    code, out, captured = convert(tmp_path, capsys, ssl_checkpoint(swinunetr, in_ddp=True))
    assert code == 0, captured.err
    meta = read_encoder_checkpoint(out).metadata
    assert meta["converted_from"]["dropped"] == {"contrastive_head": 2, "conv": 4, "rotation_head": 2}
    assert meta["converted_from"]["epoch"] == 3
    # (clip(x, -1000, 1000) + 1000) / 2000: MONAI's ScaleIntensityRanged(-1000, 1000, 0, 1, clip=True)
    assert meta["normalization"]["ct_clip"] == [-1000, 1000] and meta["normalization"]["ct_stats"] == [-1000, 2000]
    assert meta["citations"][0]["apa_citations"] == [TANG, HATAMIZADEH]
    assert "Please cite" in captured.out


def test_the_default_merge_order_is_monai_before_1_5_and_is_applied(tmp_path, capsys, swinunetr):
    """Public weights predate MONAI 1.5: the default merges as MONAI <= 1.4 did. Against an installed MONAI
    >= 1.5 the patch embedding still agrees and every merged stage differs, so the order is what is used."""
    code, out, captured = convert(tmp_path, capsys, swinunetr.state_dict())
    assert code == 0, captured.err
    meta = read_encoder_checkpoint(out).metadata
    assert meta["encoder_config"]["merge_offsets"] == DEFAULT_MERGE_ORDER == "monai-1.4"
    assert meta["converted_from"]["merge_order_from"] == "default for weights trained before MONAI 1.5"
    theirs, ours = stage_outputs(swinunetr, converted_encoder(out), torch.randn(1, 2, *SIZE, dtype=torch.double))
    torch.testing.assert_close(ours[0], theirs[0], **TIGHT)
    if MONAI_MERGING != DEFAULT_MERGE_ORDER:
        assert all((a - b).abs().max() > 1e-3 for a, b in zip(ours[1:], theirs[1:]))

    assert inspect_main([str(out)]) == 0
    shown = capsys.readouterr().out
    assert f'family: "{SWIN3D.name}"' in shown and 'merge_offsets: "monai-1.4"' in shown
    assert "dropped:" in shown and "decoder5: 4" in shown


def test_the_window_is_told_by_the_saved_index_where_the_tensors_tell_it():
    for window in [(3, 2, 2), (2, 3, 2), (3, 5, 2), (7, 7, 7)]:
        rows = (2 * window[0] - 1) * (2 * window[1] - 1) * (2 * window[2] - 1)
        assert windows_of(rows, relative_position_index(window)) == [window]
    # a side of 1 adds no offsets: 1x2x2, 2x1x2 and 2x2x1 windows have the same table and index
    assert windows_of(9, relative_position_index((1, 2, 2))) == [(1, 2, 2), (2, 1, 2), (2, 2, 1)]


# ------------------------------------------------------------------------------------ refusals
def _without(state: dict, part: str) -> dict:
    return {k: v for k, v in state.items() if part not in k}


def _replaced(state: dict, key: str, value) -> dict:
    return {**state, key: value}


CRAFTED = {  # name -> (state dict of the SwinUNETR -> what is saved, what the one sentence says)
    "missing stage": (lambda s: _without(s, "swinViT.layers4."), "expected MONAI's four stages"),
    "missing tensor": (lambda s: _without(s, "layers2.0.blocks.1.attn.qkv.weight"), "1 missing"),
    "inconsistent shape": (
        lambda s: _replaced(s, "swinViT.layers3.0.blocks.0.attn.proj.weight", torch.zeros(48, 24)),
        "of wrong shape",
    ),
    "inconsistent width": (
        lambda s: _replaced(s, "swinViT.layers2.0.blocks.0.norm1.weight", torch.zeros(12)),
        "expected [24]",
    ),
    "no index": (lambda s: _without(s, f"layers1.0.blocks.0.{INDEX}"), f"lacks {INDEX}"),
    "index of another window": (
        lambda s: _replaced(s, f"swinViT.layers1.0.blocks.0.{INDEX}", relative_position_index((2, 3, 2))),
        "its blocks use different windows [(2, 3, 2), (3, 2, 2)]",
    ),
    "index of no window": (
        lambda s: _replaced(s, f"swinViT.layers1.0.blocks.0.{INDEX}", relative_position_index(WINDOW).flip(0)),
        "fit no 3D window",
    ),
    "SwinUNETR v2": (lambda s: _replaced(s, "swinViT.layers1c.0.conv.weight", torch.zeros(1)), "SwinUNETR v2"),
    "a 2D Swin": (lambda s: {"patch_embed.proj.weight": torch.zeros(12, 1, 4, 4)}, "not a 3D convolution's weight"),
    "not a Swin": (lambda s: {"conv.weight": torch.zeros(12, 1, 4, 4)}, "holds no MONAI SwinTransformer"),
}


@pytest.mark.parametrize("crafted", list(CRAFTED))
def test_a_crafted_file_is_one_sentence_and_writes_nothing(tmp_path, capsys, swinunetr, crafted):
    craft, says = CRAFTED[crafted]
    code, out, captured = convert(tmp_path, capsys, craft(swinunetr.state_dict()))
    assert code == 2 and not out.exists()
    assert says in captured.err and len(captured.err.strip().splitlines()) == 1, captured.err


def test_a_pickle_that_would_run_code_is_refused_unrun(tmp_path, capsys, swinunetr):
    marker = tmp_path / "pwned"
    saved = {"state_dict": swinunetr.state_dict(), "args": _Marker(str(marker))}
    code, out, captured = convert(tmp_path, capsys, saved)
    assert code == 2 and not out.exists() and not marker.exists()
    assert "weights_only=True" in captured.err and len(captured.err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "flags, says",
    [
        (["--from", "monai", "--in-channels", "1"], "--in-channels applies to 2D Swin layouts"),
        (["--from", "timm", "--merge-order", "monai-1.5"], "--merge-order applies to --from monai only"),
        (["--from", "monai", "--merge-order", "monai-1.3"], "--merge-order"),
    ],
)
def test_flags_that_do_not_apply_are_refused(tmp_path, capsys, flags, says):
    out = tmp_path / "encoder.safetensors"
    assert main([*flags, str(tmp_path / "weights.pt"), str(out)]) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1 and not out.exists()


def test_auto_points_a_monai_file_to_from_monai(tmp_path, capsys, swinunetr):
    source, out = tmp_path / "swinunetr.pt", tmp_path / "encoder.safetensors"
    torch.save(swinunetr.state_dict(), source)
    assert main([str(source), str(out)]) == 2
    err = capsys.readouterr().err
    assert err.rstrip().endswith("convert it with --from monai.") and not out.exists()
