"""The metadata schema: crafted, correctly hashed checkpoints are refused by the reader with one
sentence per violation, before any model is built (issue 17, items 5 and 6)."""

import copy
import dataclasses
import json

import pytest
from safetensors import safe_open
from safetensors.torch import save_file

from nnunetv2_vismae.checkpoint import CheckpointError, read_encoder_checkpoint, save_encoder_checkpoint
from nnunetv2_vismae.checkpoint import families
from nnunetv2_vismae.checkpoint.cli import format_checkpoint, main


def crafted(source, target, **changes):
    """A copy of checkpoint ``source`` whose metadata entries are replaced by ``changes`` (a value
    of None removes the entry); an entry given as a function maps the old decoded value. The
    tensors, and so the content hash, stay valid: a file someone wrote on purpose."""
    with safe_open(str(source), "pt") as f:
        meta = {k: json.loads(v) for k, v in f.metadata().items()}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    for key, value in changes.items():
        value = value(copy.deepcopy(meta.get(key))) if callable(value) else value
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    save_file(tensors, str(target), metadata={k: json.dumps(v) for k, v in meta.items()})
    return target


def config_with(**entries):
    """encoder_config changed by ``entries`` (a value of ... removes the entry)."""

    def change(config):
        config.update(entries)
        return {k: v for k, v in config.items() if v is not ...}

    return change


@pytest.fixture
def no_model_building(monkeypatch):
    """Fail the test if the swin family is asked to build an encoder (even on the meta device)."""

    def refuse(config):
        raise AssertionError("a model was built from a config that should have been refused")

    monkeypatch.setitem(families.FAMILIES, "swin", dataclasses.replace(families.SWIN, expected_shapes=refuse))


def _refusal(path) -> str:
    with pytest.raises(CheckpointError) as info:
        read_encoder_checkpoint(path)
    message = str(info.value)
    assert message.startswith(f"Encoder checkpoint {path} has invalid metadata: ") and "\n" not in message
    return message.removeprefix(f"Encoder checkpoint {path} has invalid metadata: ")


CONFIG_VIOLATIONS = [
    (
        {"depths": [1, 1, 1, 100000]},
        "encoder_config.depths is [1, 1, 1, 100000], expected a list of 1 to 8 entries, each an integer from 1 to 64.",
    ),
    (
        {"depths": [1] * 9, "num_heads": [1] * 9},
        "encoder_config.depths is [1, 1, 1, 1, 1, 1, 1, 1, 1], expected a list of 1 to 8",
    ),
    ({"depths": []}, "encoder_config.depths is [], expected a list of 1 to 8"),
    (
        {"num_heads": [0, 2, 3, 4]},
        "encoder_config.num_heads is [0, 2, 3, 4], expected a list of 1 to 8 entries, each an integer from 1 to 4096.",
    ),
    (
        {"num_heads": [1, 2, 3]},
        "encoder_config.num_heads is [1, 2, 3], expected one head count per stage of depths [1, 1, 1, 1].",
    ),
    (
        {"num_heads": [1, 2, 5, 4]},
        "encoder_config.num_heads[2] is 5, expected a divisor of stage 2's width 96 (embed_dim 24 doubled per stage).",
    ),
    ({"patch_size": 0}, "encoder_config.patch_size is 0, expected an integer from 1 to 64."),
    ({"patch_size": True}, "encoder_config.patch_size is true, expected an integer from 1 to 64."),
    ({"embed_dim": -24}, "encoder_config.embed_dim is -24, expected an integer from 1 to 4096."),
    ({"embed_dim": 8192}, "encoder_config.embed_dim is 8192, expected an integer from 1 to 4096."),
    ({"window_size": 0}, "encoder_config.window_size is 0, expected an integer from 1 to 64."),
    ({"window_size": 7.5}, "encoder_config.window_size is 7.5, expected an integer from 1 to 64."),
    ({"in_channels": 100}, "encoder_config.in_channels is 100, expected an integer from 1 to 64."),
    ({"mlp_ratio": "big"}, 'encoder_config.mlp_ratio is "big", expected a number in (0, 16].'),
    ({"mlp_ratio": 0}, "encoder_config.mlp_ratio is 0, expected a number in (0, 16]."),
    ({"drop_path_rate": 1.5}, "encoder_config.drop_path_rate is 1.5, expected a number in [0, 1)."),
    (
        {"shift_single_window_stages": "yes"},
        'encoder_config.shift_single_window_stages is "yes", expected true or false.',
    ),
    ({"final_norm": 0}, "encoder_config.final_norm is 0, expected true or false."),
    ({"patch_size": ...}, "encoder_config lacks the entry 'patch_size', expected an integer from 1 to 64."),
    ({"\x1b[2Jwipe": 1}, 'encoder_config has the unknown entry "\\u001b[2Jwipe", expected only in_channels'),
]


@pytest.mark.parametrize("entries, sentence", CONFIG_VIOLATIONS)
def test_crafted_encoder_configs_are_refused_before_anything_is_built(
    saved, tmp_path, no_model_building, entries, sentence
):
    path, _, _ = saved
    bad = crafted(path, tmp_path / "bad.safetensors", encoder_config=config_with(**entries))
    assert sentence in _refusal(bad)


@pytest.mark.parametrize(
    "normalization, sentence",
    [
        ("zscore", 'normalization is "zscore", expected a JSON object such as {"scheme": "zscore"}.'),
        ({"scheme": "zscore", "mean": 3}, 'normalization has the unknown entry "mean", expected only scheme, '),
        ({"scheme": "minmax"}, 'normalization.scheme is "minmax", expected one of "zscore", "ct", "nnunet", '),
        ({"scheme": ["zscore"]}, 'normalization.scheme is ["zscore"], expected one of "zscore", '),
        (
            {"scheme": "ct", "ct_clip": [400, -1000]},
            "normalization.ct_clip is [400, -1000], expected [low, high], two numbers, the first smaller or null.",
        ),
        ({"scheme": "ct", "ct_stats": [0, 0]}, "normalization.ct_stats is [0, 0], expected [mean, std]"),
        (
            {"scheme": "imagenet_rgb_folded", "mean": [0.4], "std": [0.2]},
            "normalization lacks the entry 'folded_mean', expected a finite number.",
        ),
        ({"scheme": "mixed"}, "normalization lacks the entry 'per_source'"),
        (
            {"scheme": "zscore", "per_source": [{"scheme": "ct", "ct_clip": "wide"}]},
            'normalization.per_source[0].ct_clip is "wide", expected [low, high]',
        ),
        (
            {
                "scheme": "nnunet",
                "normalization_schemes": ["CTNormalization"],
                "foreground_intensity_properties_per_channel": {"0": {"mean": 1.0}},
            },
            'normalization.foreground_intensity_properties_per_channel is {"0": {"mean": 1.0}}, expected channel "0" '
            "to hold percentile_00_5, percentile_99_5, mean, std (CTNormalization needs them).",
        ),
    ],
)
def test_crafted_normalizations_are_refused(saved, tmp_path, normalization, sentence):
    path, _, _ = saved
    bad = crafted(path, tmp_path / "bad.safetensors", normalization=normalization)
    assert sentence in _refusal(bad)


def test_every_violation_gets_its_own_sentence(saved, tmp_path):
    path, _, _ = saved
    bad = crafted(
        path,
        tmp_path / "bad.safetensors",
        normalization={"scheme": "zscore", "x": 1},
        encoder_config=config_with(patch_size=0, embed_dim=-1),
    )
    assert _refusal(bad) == (
        "encoder_config.patch_size is 0, expected an integer from 1 to 64. "
        "encoder_config.embed_dim is -1, expected an integer from 1 to 4096. "
        'normalization has the unknown entry "x", expected only scheme, ct_clip, ct_stats, applied, '
        "description, per_source."
    )


def test_long_values_are_shortened(saved, tmp_path):
    path, _, _ = saved
    bad = crafted(path, tmp_path / "bad.safetensors", encoder_config=config_with(depths=[2] * 100000))
    message = _refusal(bad)
    assert len(message) < 300 and "[2, 2, 2" in message and "..." in message


def test_inspect_refuses_a_huge_depth_at_once(saved, tmp_path, capsys):
    """Issue 17: depths [2, 2, 2, 100000] with a valid hash hung inspect (3.4 GB, killed at 120 s)."""
    path, _, _ = saved
    bad = crafted(path, tmp_path / "deep.safetensors", encoder_config=config_with(depths=[2, 2, 2, 100000]))
    assert main([str(bad)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1
    assert "encoder_config.depths is [2, 2, 2, 100000], expected a list of 1 to 8 entries" in captured.err


def test_the_writer_holds_metadata_to_the_same_schema(tmp_path, make_encoder, base_metadata):
    encoder = make_encoder(0)
    meta = base_metadata(encoder)
    meta["encoder_config"] = {**meta["encoder_config"], "mlp_ratio": "big"}
    with pytest.raises(CheckpointError, match=r"has invalid metadata: encoder_config\.mlp_ratio is \"big\""):
        save_encoder_checkpoint(tmp_path / "x.safetensors", encoder.state_dict(), meta)
    meta = base_metadata(encoder, normalization={"scheme": "zscore", "clip": [0, 1]})
    with pytest.raises(CheckpointError, match='unknown entry "clip"'):
        save_encoder_checkpoint(tmp_path / "x.safetensors", encoder.state_dict(), meta)
    assert list(tmp_path.iterdir()) == []


def test_what_the_writers_write_passes(tmp_path, make_encoder, base_metadata):
    from nnunetv2_vismae.checkpoint.foreign_layouts import imagenet_normalization
    from nnunetv2_vismae.io.normalization import Normalization

    encoder = make_encoder(0)
    nnunet = {
        "scheme": "nnunet",
        "normalization_schemes": ["CTNormalization"],
        "use_mask_for_norm": [False],
        "foreground_intensity_properties_per_channel": {
            "0": {
                "max": 3000.0,
                "mean": 50.0,
                "median": 40.0,
                "min": -1024.0,
                "percentile_00_5": -900.0,
                "percentile_99_5": 1500.0,
                "std": 200.0,
            }
        },
    }
    for norm in [
        {"scheme": "ct", "per_source": [Normalization("ct", (-1000, 400)).to_json(), nnunet]},
        {"scheme": "mixed", "per_source": [Normalization().to_json(), nnunet]},
        imagenet_normalization("vismae", 3, 1),
        imagenet_normalization("timm", 3, 3),
    ]:
        path = tmp_path / "ok.safetensors"
        save_encoder_checkpoint(path, encoder.state_dict(), base_metadata(encoder, normalization=norm))
        assert read_encoder_checkpoint(path).normalization == norm


def test_checkpoints_without_the_shift_rule_read_as_timms_rule(saved, tmp_path):
    path, _, _ = saved
    old = crafted(path, tmp_path / "old.safetensors", encoder_config=config_with(shift_single_window_stages=...))
    assert read_encoder_checkpoint(old).encoder_config["shift_single_window_stages"] is False


def test_checkpoints_without_the_final_norm_entry_read_as_having_one(saved, tmp_path):
    path, _, _ = saved
    old = crafted(path, tmp_path / "old.safetensors", encoder_config=config_with(final_norm=...))
    assert read_encoder_checkpoint(old).encoder_config["final_norm"] is True


def test_a_config_without_the_final_norm_refuses_norm_tensors(saved, tmp_path):
    path, _, _ = saved
    with pytest.raises(CheckpointError, match="2 unexpected"):
        read_encoder_checkpoint(
            crafted(path, tmp_path / "bad.safetensors", encoder_config=config_with(final_norm=False))
        )


def test_inspect_builds_no_model(saved, monkeypatch):
    path, _, _ = saved
    checkpoint = read_encoder_checkpoint(path)
    monkeypatch.setitem(
        families.FAMILIES,
        "swin",
        dataclasses.replace(families.SWIN, expected_shapes=lambda config: pytest.fail("inspect built a model")),
    )
    text = format_checkpoint(checkpoint)
    groups = [line.split()[0] for line in text.splitlines()[-6:]]
    assert groups == ["patch_embed", "layers.0", "layers.1", "layers.2", "layers.3", "norm"]


def test_classification_gets_one_sentence_for_a_crafted_normalization(saved, tmp_path):
    from nnunetv2_vismae.classification.model import read_pretrained

    path, _, _ = saved
    for norm in ("zscore", {"scheme": "imagenet_rgb_folded", "mean": [0.4], "std": [0.2]}):
        bad = crafted(path, tmp_path / "bad.safetensors", normalization=norm)
        with pytest.raises(CheckpointError, match="has invalid metadata: normalization"):
            read_pretrained(str(bad))


# ------------------------------------------------------------------------------------------ cnn
@pytest.fixture(scope="module")
def cnn_checkpoint(tmp_path_factory):
    from nnunetv2_vismae.checkpoint.cnn_encoder import build_stock_network, cnn_encoder_config
    from tests.pretrain.test_cnn_family import PLAIN

    path = tmp_path_factory.mktemp("cnn") / "encoder.safetensors"
    network = build_stock_network(PLAIN, 1)
    save_encoder_checkpoint(
        path,
        network.encoder.state_dict(),
        {"family": "cnn", "encoder_config": cnn_encoder_config(PLAIN, 1), "normalization": {"scheme": "zscore"}},
    )
    return path


def _architecture_with(**kwargs):
    def change(config):
        architecture = config["architecture"]
        for key, value in kwargs.items():
            top = key in ("network_class_name", "_kw_requires_import")
            (architecture if top else architecture["arch_kwargs"])[key] = value
        return config

    return change


@pytest.mark.parametrize(
    "entries, sentence",
    [
        (
            {"n_stages": 100000},
            "encoder_config.architecture.arch_kwargs.n_stages is 100000, expected an integer from 1 to 16.",
        ),
        (
            {"n_conv_per_stage": [2, 2, 100000]},
            "encoder_config.architecture.arch_kwargs.n_conv_per_stage is "
            "[2, 2, 100000], expected an integer from 1 to 64, or a list",
        ),
        (
            {"network_class_name": "os.system"},
            'encoder_config.architecture.network_class_name is "os.system", '
            "expected one of dynamic_network_architectures.architectures.unet.PlainConvUNet, ",
        ),
        (
            {"nonlin": "builtins.exec"},
            'encoder_config.architecture.arch_kwargs.nonlin is "builtins.exec", expected '
            "null or one of torch.nn.LeakyReLU, torch.nn.ReLU,",
        ),
        (  # pydoc.locate walks attributes: a torch.nn. prefix reaches os
            {"conv_op": "torch.nn.modules.conv.torch.os.system"},
            'encoder_config.architecture.arch_kwargs.conv_op is "torch.nn.modules.conv.torch.os.system", expected '
            "null or one of torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d.",
        ),
        (
            {"network_class_name": "dynamic_network_architectures.architectures.unet.torch.os.system"},
            'encoder_config.architecture.network_class_name is "dynamic_network_architectures.architectures.unet.'
            "torch.o..., expected one of dynamic_network_architectures.architectures.unet.PlainConvUNet, ",
        ),
        (
            {"network_class_name": "nnunetv2_vismae.architectures.SwinUNet"},  # not a network of the cnn family
            'encoder_config.architecture.network_class_name is "nnunetv2_vismae.architectures.SwinUNet", expected',
        ),
        (
            {"_kw_requires_import": ["conv_op", "n_stages"]},
            'encoder_config.architecture._kw_requires_import names "n_stages", expected only conv_op, norm_op, '
            "dropout_op, nonlin.",
        ),
        (
            {"nonlin_kwargs": {"inplace": {"nested": "object"}}},
            'encoder_config.architecture.arch_kwargs.nonlin_kwargs is {"inplace": {"nested": "object"}}, expected '
            "null or an object of numbers, strings, true/false or null.",
        ),
    ],
)
def test_crafted_cnn_architectures_are_refused_before_anything_is_built(
    cnn_checkpoint, tmp_path, monkeypatch, entries, sentence
):
    monkeypatch.setitem(
        families.FAMILIES,
        "cnn",
        dataclasses.replace(families.CNN, expected_shapes=lambda config: pytest.fail("a model was built")),
    )
    bad = crafted(cnn_checkpoint, tmp_path / "bad.safetensors", encoder_config=_architecture_with(**entries))
    assert sentence in _refusal(bad)


def test_a_cnn_checkpoint_as_pretraining_writes_it_passes(cnn_checkpoint):
    assert read_encoder_checkpoint(cnn_checkpoint).family == "cnn"


def test_metadata_nested_thousands_deep_is_refused_in_one_sentence(saved, tmp_path):
    path, _, _ = saved
    with safe_open(str(path), "pt") as f:
        meta, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    bad = tmp_path / "deep.safetensors"
    save_file(tensors, str(bad), metadata={**meta, "notes": "[" * 100000 + "]" * 100000})
    with pytest.raises(CheckpointError, match=r"metadata entry 'notes' is not JSON text"):
        read_encoder_checkpoint(bad)


def test_inspect_prints_deeply_nested_metadata(saved, tmp_path, capsys):
    path, _, _ = saved
    deep = 1
    for _ in range(900):
        deep = {"a": deep}
    assert main([str(crafted(path, tmp_path / "nested.safetensors", notes=deep))]) == 0
    assert '{"a": {"a": ' in capsys.readouterr().out


@pytest.mark.parametrize(
    "change, reason",
    [
        (_architecture_with(kernel_sizes=[[3, 3]]), "(AssertionError: kernel_sizes must have as many entries"),
        (_architecture_with(norm_op_kwargs={"bogus": 1}), "unexpected keyword argument 'bogus'"),
        (_architecture_with(_kw_requires_import=["norm_op", "nonlin"]), "(TypeError: 'str' object is not callable)"),
        (config_with(load_root="nowhere"), "(AttributeError: "),
    ],
    ids=["kernel sizes", "norm kwargs", "conv_op not imported", "load root"],
)
def test_cnn_architectures_that_build_no_encoder_are_refused_in_one_sentence(cnn_checkpoint, tmp_path, change, reason):
    """What passes the schema but makes dynamic-network-architectures fail (issue 29)."""
    bad = crafted(cnn_checkpoint, tmp_path / "bad.safetensors", encoder_config=change)
    message = _refusal(bad)
    assert message.startswith("encoder_config.architecture does not build the encoder (") and reason in message
