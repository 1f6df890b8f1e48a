"""A checkpoint's spatial dimensions (issue 32): 3D cnn checkpoints carry ``spatial_dims`` 3, 2D files
stay as they were (no entry, same hashes), and every disagreement is refused in one sentence."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors import safe_open

from nnunetv2_vismae.checkpoint import CheckpointError, load_encoder_into, read_encoder_checkpoint
from nnunetv2_vismae.checkpoint import save_encoder_checkpoint
from nnunetv2_vismae.checkpoint.cli import main as inspect_main
from nnunetv2_vismae.checkpoint.cnn_encoder import build_stock_network, cnn_encoder_config, encoder_and_stem_as_encoder
from tests.checkpoint.test_checkpoint_schema import _refusal, crafted, config_with
from tests.pretrain.test_cnn_family import PLAIN


def volume_architecture(architecture: dict) -> dict:
    """The same network with 3D convolutions, kernels and strides (what 3d_fullres plans hold)."""
    arch = copy.deepcopy(architecture)
    kwargs = arch["arch_kwargs"]
    kwargs["conv_op"] = "torch.nn.modules.conv.Conv3d"
    kwargs["norm_op"] = "torch.nn.modules.instancenorm.InstanceNorm3d"
    kwargs["kernel_sizes"] = [[3, 3, 3]] * kwargs["n_stages"]
    kwargs["strides"] = [[s[0]] * 3 for s in kwargs["strides"]]
    return arch


PLAIN_3D = volume_architecture(PLAIN)


def save_cnn(path, architecture: dict, **extra) -> str:
    torch.manual_seed(0)
    encoder = build_stock_network(architecture, 1).encoder
    metadata = {
        "family": "cnn",
        "encoder_config": cnn_encoder_config(architecture, 1),
        "normalization": {"scheme": "zscore"},
    }
    return save_encoder_checkpoint(path, encoder.state_dict(), {**metadata, **extra})


def header(path) -> dict:
    with safe_open(str(path), "pt") as f:
        return f.metadata()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """{2: a 2D cnn checkpoint, 3: a 3D one}, both written without a spatial_dims entry."""
    folder = tmp_path_factory.mktemp("dims")
    paths = {2: folder / "plain2d.safetensors", 3: folder / "plain3d.safetensors"}
    save_cnn(paths[2], PLAIN)
    save_cnn(paths[3], PLAIN_3D)
    return paths


def test_a_3d_cnn_checkpoint_records_3_and_is_read_and_inspected_as_3d(checkpoints, capsys):
    path = checkpoints[3]
    assert header(path)["spatial_dims"] == "3"  # filled in by the writer from the conv op
    checkpoint = read_encoder_checkpoint(path)
    assert checkpoint.spatial_dims == 3 and checkpoint.encoder_config["conv_op"] == "Conv3d"
    assert inspect_main([str(path)]) == 0
    assert "  spatial_dims: 3\n" in capsys.readouterr().out


def test_a_2d_file_has_no_entry_reads_as_2_and_keeps_the_hashes_it_had_before_3d(checkpoints, tmp_path, capsys):
    path = checkpoints[2]
    assert "spatial_dims" not in header(path)
    checkpoint = read_encoder_checkpoint(path)
    assert checkpoint.spatial_dims == 2
    # the hashes of this file as written before spatial_dims existed (commit 86c0224)
    assert checkpoint.content_hash == "85ea3a0a42d90c3bcefb98f5c44992d718850dc091d11216b37c121c25acb35c"
    assert checkpoint.metadata_hash == "d18560a4cb5a8b4a5c6d49a7c6181cfe8257c0ac5117aec9f208d6b1d1335618"
    explicit = tmp_path / "explicit2d.safetensors"
    save_cnn(explicit, PLAIN, spatial_dims=2)  # an explicit 2 is not written either
    assert "spatial_dims" not in header(explicit)
    assert read_encoder_checkpoint(explicit).metadata_hash == checkpoint.metadata_hash
    assert inspect_main([str(path)]) == 0
    assert "  spatial_dims: 2\n" in capsys.readouterr().out


@pytest.mark.parametrize(
    "dims, value, sentence",
    [
        (2, 3, "spatial_dims is 3, but its cnn encoder_config describes a 2D encoder."),
        (2, 4, "spatial_dims is 4, expected 2 or 3."),
        (2, "3", 'spatial_dims is "3", expected 2 or 3.'),
        (2, True, "spatial_dims is true, expected 2 or 3."),
        (3, None, "spatial_dims is absent (meaning 2), but its cnn encoder_config describes a 3D encoder."),
    ],
    ids=["3 with Conv2d", "4", "a string", "a boolean", "absent with Conv3d"],
)
def test_crafted_dimensions_are_refused_in_one_sentence(checkpoints, tmp_path, dims, value, sentence):
    bad = crafted(checkpoints[dims], tmp_path / "bad.safetensors", spatial_dims=value)
    assert _refusal(bad) == sentence


def test_a_swin_checkpoint_claiming_3d_is_refused(saved, tmp_path):
    path, _, _ = saved
    bad = crafted(path, tmp_path / "bad.safetensors", spatial_dims=3)
    assert _refusal(bad) == "spatial_dims is 3, but its swin encoder_config describes a 2D encoder."


def test_a_conv_op_of_neither_2d_nor_3d_is_refused(checkpoints, tmp_path):
    bad = crafted(checkpoints[2], tmp_path / "bad.safetensors", encoder_config=config_with(conv_op="Conv1d"))
    assert _refusal(bad) == 'encoder_config.conv_op is "Conv1d", expected one of "Conv2d", "Conv3d".'


def test_writing_dimensions_that_disagree_with_the_conv_op_is_refused(tmp_path):
    path = tmp_path / "enc.safetensors"
    with pytest.raises(CheckpointError) as info:
        save_cnn(path, PLAIN_3D, spatial_dims=2)
    assert str(info.value) == (
        f"Checkpoint {path} has invalid metadata: spatial_dims is 2, but its cnn encoder_config describes a 3D encoder."
    )
    assert not path.exists()


@pytest.mark.parametrize("dims, network_dims", [(3, 2), (2, 3)])
def test_loading_into_a_network_of_other_dimensions_names_both(checkpoints, dims, network_dims):
    network = build_stock_network(PLAIN if network_dims == 2 else PLAIN_3D, 1)
    before = {k: v.clone() for k, v in network.state_dict().items()}
    with pytest.raises(CheckpointError) as info, encoder_and_stem_as_encoder(network):
        load_encoder_into(network, checkpoints[dims], log=lambda _: None)
    assert str(info.value).startswith(
        f"Encoder checkpoint {checkpoints[dims]} holds a {dims}D encoder, but the network's encoder is {network_dims}D;"
    )
    assert all(torch.equal(before[k], v) for k, v in network.state_dict().items())


def test_a_3d_checkpoint_loads_into_the_3d_network(checkpoints):
    network = build_stock_network(PLAIN_3D, 1)
    with encoder_and_stem_as_encoder(network):
        report = load_encoder_into(network, checkpoints[3], log=lambda _: None)
    assert report.fraction_loaded == 1.0 and not report.adapted
    assert json.loads(header(checkpoints[3])["encoder_config"])["strides"] == [[1, 1, 1], [2, 2, 2], [2, 2, 2]]
