"""load_encoder_into: exact loads, adaptations (channels, window, patch) and refusals."""

import pytest
import torch

from nnunetv2_vismae.checkpoint import (
    CheckpointError,
    EncoderCheckpoint,
    load_encoder_into,
    read_encoder_checkpoint,
    save_encoder_checkpoint,
)
from nnunetv2_vismae.checkpoint.adapt import remap_input_channels


def _outputs(encoder, x):
    with torch.no_grad():
        return encoder(x)


def _snapshot(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def _unchanged(module, snapshot):
    return all(torch.equal(v, snapshot[k]) for k, v in module.state_dict().items())


def test_same_config_loads_everything_and_reproduces_outputs(saved, make_network):
    path, encoder, content_hash = saved
    network = make_network(seed=1)
    x = torch.randn(2, 1, 32, 32)
    assert not torch.equal(_outputs(network.encoder, x)[-1], _outputs(encoder, x)[-1])

    logged = []
    report = load_encoder_into(network, path, log=logged.append)
    assert report.fraction_loaded == 1.0
    assert report.num_loaded == report.num_network_tensors == len(encoder.state_dict())
    assert report.adapted == [] and report.missing == [] and report.unexpected == []
    assert report.content_hash == content_hash
    for a, b in zip(_outputs(network.encoder, x), _outputs(encoder, x)):
        assert torch.equal(a, b)
    assert logged == [report.summary()]
    assert "100.0%" in logged[0] and str(path) in logged[0]


def test_relative_position_index_is_not_in_the_checkpoint(saved):
    path, encoder, _ = saved
    tensors = read_encoder_checkpoint(path).tensors
    assert any(n.endswith("relative_position_index") for n, _ in encoder.named_buffers())
    assert not any("relative_position_index" in n or "attn_mask" in n for n in tensors)


def test_in_channels_1_to_3_keeps_the_output_of_a_repeated_image(saved, make_network):
    path, encoder, _ = saved
    network = make_network(in_channels=3)
    report = load_encoder_into(network, path, log=lambda s: None)
    assert report.fraction_loaded == 1.0
    assert report.adapted == ["patch_embed.proj.weight"]
    assert "1 -> 3" in report.adaptations["patch_embed.proj.weight"]

    x = torch.randn(2, 1, 32, 32)
    for a, b in zip(_outputs(network.encoder, x.repeat(1, 3, 1, 1)), _outputs(encoder, x)):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("old, new", [(1, 3), (2, 3), (3, 1), (4, 2)])
def test_channel_remap_preserves_the_channel_sum(old, new):
    w = torch.randn(5, old, 2, 2)
    out = remap_input_channels(w, new)
    assert out.shape == (5, new, 2, 2)
    torch.testing.assert_close(out.sum(1), w.sum(1))
    if new % old == 0:  # plain repetition, rescaled by old/new
        torch.testing.assert_close(out, w.repeat(1, new // old, 1, 1) * old / new)


def test_window_7_to_8_resizes_the_relative_position_tables(saved, make_network):
    path, encoder, _ = saved
    network = make_network(window_size=8)
    report = load_encoder_into(network, path, log=lambda s: None)
    tables = [n for n in encoder.state_dict() if n.endswith("relative_position_bias_table")]
    assert sorted(report.adapted) == sorted(tables) and len(tables) == 4
    assert all("7x7 -> 8x8" in report.adaptations[n] for n in tables)
    assert report.fraction_loaded == 1.0

    old = encoder.state_dict()[tables[0]]  # 13*13 x heads, zero offset in the middle
    new = network.encoder.state_dict()[tables[0]]  # 15*15 x heads
    assert new.shape == (225, old.shape[1])
    torch.testing.assert_close(new[112], old[84])  # the (0, 0) relative offset keeps its bias
    assert torch.isfinite(torch.cat([t.flatten() for t in _outputs(network.encoder, torch.randn(1, 1, 32, 32))])).all()


def test_patch_size_4_to_2_resamples_the_patch_embedding(saved, make_network):
    path, encoder, _ = saved
    network = make_network(patch_size=2)
    report = load_encoder_into(network, path, log=lambda s: None)
    assert report.adapted == ["patch_embed.proj.weight"]
    assert "4x4 -> 2x2" in report.adaptations["patch_embed.proj.weight"]
    assert network.encoder.patch_embed.proj.weight.shape[-2:] == (2, 2)
    # every other tensor is copied as is
    for name, value in encoder.state_dict().items():
        if name != "patch_embed.proj.weight":
            assert torch.equal(network.encoder.state_dict()[name], value), name


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"depths": (1, 1, 2, 1)}, "depths"),
        ({"embed_dim": 36}, "embed_dim"),
        ({"num_heads": (1, 2, 4, 4)}, "num_heads"),
        ({"shift_single_window_stages": True}, "shift_single_window_stages"),
        ({"final_norm": False}, "final_norm"),
    ],
)
def test_structural_mismatch_is_refused_naming_both_configs(saved, make_network, overrides, field):
    path, _, _ = saved
    network = make_network(**overrides)
    before = _snapshot(network)
    with pytest.raises(CheckpointError) as info:
        load_encoder_into(network, path, log=lambda s: None)
    message = str(info.value)
    assert field in message and str(path) in message
    if field == "depths":
        assert '"depths": [1, 1, 1, 1]' in message and '"depths": [1, 1, 2, 1]' in message
    assert _unchanged(network, before)


def test_non_swin_encoder_is_refused(saved):
    path, _, _ = saved
    network = torch.nn.Module()
    network.key_to_encoder = "encoder"
    network.encoder = torch.nn.Conv2d(1, 4, 3)
    with pytest.raises(CheckpointError, match="swin encoder, but the network's encoder family"):
        load_encoder_into(network, path, log=lambda s: None)
    with pytest.raises(CheckpointError, match="key_to_encoder"):
        load_encoder_into(torch.nn.Linear(2, 2), path, log=lambda s: None)


def _in_memory(path, change):
    ckpt = read_encoder_checkpoint(path)
    tensors = dict(ckpt.tensors)
    change(tensors)
    return EncoderCheckpoint(
        tensors=tensors,
        metadata=ckpt.metadata,
        family=ckpt.family,
        encoder_config=ckpt.encoder_config,
        content_hash=ckpt.content_hash,
        path="edited-in-memory",
    )


def test_missing_tensor_is_refused_unless_allowed(saved, make_network):
    path, _, _ = saved
    name = "layers.1.blocks.0.mlp.fc2.weight"
    ckpt = _in_memory(path, lambda t: t.pop(name))
    network = make_network()
    before = _snapshot(network)
    with pytest.raises(CheckpointError, match="lacks 1 of the network's encoder tensors"):
        load_encoder_into(network, ckpt, log=lambda s: None)
    assert _unchanged(network, before)

    report = load_encoder_into(network, ckpt, log=lambda s: None, allow_missing=True)
    assert report.missing == [name] and report.fraction_loaded < 1.0
    assert torch.equal(network.encoder.state_dict()[name], before[f"encoder.{name}"])
    assert torch.equal(network.encoder.state_dict()["norm.weight"], ckpt.tensors["norm.weight"])
    assert "missing (kept initial values) " + name in report.summary()


def test_unadaptable_shape_is_refused_before_anything_changes(saved, make_network):
    path, _, _ = saved
    name = "layers.3.blocks.0.attn.qkv.weight"
    ckpt = _in_memory(path, lambda t: t.update({name: t[name][:, :-1].clone(), "extra.weight": torch.zeros(1)}))
    network = make_network()
    before = _snapshot(network)
    with pytest.raises(CheckpointError, match=f"'{name}' has shape .*cannot be adapted"):
        load_encoder_into(network, ckpt, log=lambda s: None)
    assert _unchanged(network, before)


def test_unexpected_tensors_are_reported(saved, make_network):
    path, _, _ = saved
    ckpt = _in_memory(path, lambda t: t.update({"mask_token": torch.zeros(1, 1, 24)}))
    report = load_encoder_into(make_network(), ckpt, log=lambda s: None)
    assert report.unexpected == ["mask_token"] and report.fraction_loaded == 1.0


def test_load_into_bfloat16_checkpoint_casts(tmp_path, make_encoder, make_network, base_metadata):
    encoder = make_encoder(0)
    path = tmp_path / "bf16.safetensors"
    save_encoder_checkpoint(path, {k: v.bfloat16() for k, v in encoder.state_dict().items()}, base_metadata(encoder))
    network = make_network()
    load_encoder_into(network, path, log=lambda s: None)
    w = network.encoder.patch_embed.proj.weight
    assert w.dtype == torch.float32
    assert torch.equal(w, encoder.patch_embed.proj.weight.bfloat16().float())
