"""Pretraining on volumes (a 3d_fullres configuration): N-D block masks, the cnn family's holes that stay
closed in 3D, lazy crops of nnU-Net's blosc2 arrays, a loss that falls; for the cnn and the swin3d family an
exact resume, the plans' patch, previews, the NaN guard, DDP, the checkpoint's spatial dimensions and bad
settings in one sentence."""

from __future__ import annotations

import json
import math
import os

import blosc2
import numpy as np
import pytest
import torch

from nnunetv2_vismae.checkpoint import read_encoder_checkpoint
from pretrain.cli import main
from pretrain.data.mixture import PatchDataset
from pretrain.data.nnunet import NnUNetSource
from pretrain.masking import window_mask
from pretrain.runtime import setup_runtime
from pretrain.train import Pretrainer
from tests.pretrain.helpers import (
    PLAIN_3D,
    VOLUME_CHUNKS,
    parse,
    tiny_volumes,
    training_losses,
    write_volume_dataset,
)
from tests.pretrain.test_cnn_family import assert_holes_stay_closed, mae_for, residual_architecture
from tests.pretrain.test_golden import digest
from tests.pretrain.test_reliability_faults import _poison_losses

RUN = [
    "--encoder",
    "cnn",
    "-d",
    "3",
    "-c",
    "3d_fullres",
    "--batch-size",
    "2",
    "--workers",
    "0",
    "--preview-every",
    "0",
    "-device",
    "cpu",
    "--mask-ratio",
    "0.6",
]
# each family's encoder on these volumes: cnn's from the plans; a 2-stage 3D Swin (stride 8), stochastic depth 0.1
ENCODER_FLAGS = {
    "cnn": [],
    "swin3d": ["--embed-dim", "12", "--depths", "1", "1", "--heads", "3", "3", "--window", "2"],
}
RUNS = {family: ["--encoder", family, *RUN[2:], *flags] for family, flags in ENCODER_FLAGS.items()}
BLOCK_VOXELS = {"cnn": [2, 4, 4], "swin3d": [4, 4, 4]}  # cnn: one deepest cell per axis; swin3d: 2 patches of 2
ENCODER_CONFIG = {"cnn": ("conv_op", "Conv3d"), "swin3d": ("patch_size", [2, 2, 2])}


@pytest.fixture
def volumes(tmp_path, monkeypatch):
    """Dataset 3: three volumes in blosc2 chunks of 8 x 16 x 16, one smaller than the 16 x 32 x 32 patch."""
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "preprocessed"))
    _, cases = write_volume_dataset(str(tmp_path / "preprocessed"))
    return cases


def test_a_3d_mask_hides_whole_blocks_at_the_ratio():
    mask = window_mask(3, (4, 8, 8), (2, 2, 4), 0.5, generator=torch.Generator().manual_seed(0))
    assert mask.shape == (3, 4, 8, 8)
    blocks = mask.view(3, 2, 2, 4, 2, 2, 4).permute(0, 1, 3, 5, 2, 4, 6).reshape(3, 16, 16)  # sample, block, cell
    assert (blocks.all(-1) | ~blocks.any(-1)).all()  # every block hidden or visible as a whole
    assert blocks.all(-1).sum(-1).tolist() == [8, 8, 8]  # round(0.5 * 16) blocks of each sample
    with pytest.raises(ValueError, match="patch grid 4x8x8 is not divisible by the mask block size"):
        window_mask(1, (4, 8, 8), (3, 2, 2), 0.5)


@pytest.mark.parametrize("visible_norm", [False, True], ids=["norm", "visible-norm"])
@pytest.mark.parametrize(
    "architecture", [PLAIN_3D, residual_architecture(PLAIN_3D)], ids=["PlainConvUNet", "ResidualEncoderUNet"]
)
def test_holes_stay_closed_through_every_3d_stage(architecture, visible_norm):
    mask = window_mask(2, (8, 8, 8), 2, 0.5, generator=torch.Generator().manual_seed(1))  # cells of stride 2x4x4
    assert_holes_stay_closed(mae_for(architecture, visible_norm), torch.randn(2, 1, 16, 32, 32), mask)


def test_the_loss_falls_on_tiny_volumes():
    mae, imgs = mae_for(PLAIN_3D).train(), tiny_volumes()
    optimizer = torch.optim.AdamW(mae.parameters(), lr=3e-3)
    losses, pred = training_losses(mae, imgs, optimizer, steps=12, mask_ratio=0.5, grid=(4, 4, 4))
    assert pred.shape == imgs.shape
    assert sum(losses[-3:]) < 0.75 * sum(losses[:3]), losses


class RecordingArray:
    """A blosc2 array that records the keys it is sliced with."""

    def __init__(self, array):
        self.array, self.keys = array, []

    @property
    def shape(self):
        return self.array.shape

    def __getitem__(self, key):
        self.keys.append(key)
        return self.array[key]


def test_a_crop_decompresses_only_the_chunks_it_touches(volumes, monkeypatch):
    source = NnUNetSource("3", "3d_fullres", volumes=True)
    assert len(source) == 3 and source.num_items == 3  # one item per volume
    image_array, opened = source.image_array, []

    def recording_image_array(identifier):
        opened.append(RecordingArray(image_array(identifier)))
        return opened[-1]

    monkeypatch.setattr(source, "image_array", recording_image_array)
    dataset = PatchDataset([source], [8, 16, 16], seed=4)
    for k in range(6):
        patch = dataset[k].numpy()
        (array,) = opened[-1:]
        (key,) = array.keys  # one read, of the crop's region only
        chunks = math.prod(math.ceil(n / c) for n, c in zip(array.shape, VOLUME_CHUNKS))
        assert array.array.schunk.nchunks == chunks > 27  # more than any crop meets
        assert len(blosc2.get_slice_nchunks(array.array, key)) <= 27  # an 8x16x16 crop meets at most 3x3x3
        assert np.array_equal(patch, array.array[:][key])


def test_a_crop_reads_the_image_alone_and_equals_nnunets_load_case(volumes, monkeypatch):
    source = NnUNetSource("3", "3d_fullres", volumes=True)
    expected = {i: np.asarray(source.dataset.load_case(i)[0]) for i in source.identifiers}
    monkeypatch.setattr(source.dataset, "load_case", None)  # neither the segmentation nor the .pkl is opened
    for index, identifier in enumerate(source.identifiers):
        region = (slice(1, 9), slice(3, 19), slice(2, 18))
        crop = source.load_region(index, region)
        assert crop.dtype == np.float32 and np.array_equal(crop, expected[identifier][(slice(None), *region)])


def test_a_volume_smaller_than_the_patch_is_zero_padded(tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path))
    _, cases = write_volume_dataset(str(tmp_path), dataset_id=4, shapes=((1, 12, 24, 40),))
    small = cases["case0"][0]
    dataset = PatchDataset([NnUNetSource("4", "3d_fullres", volumes=True)], [16, 32, 32], seed=0)
    offsets = set()
    for k in range(4):
        patch = dataset[k].numpy()[0]
        z, y, x = (np.flatnonzero(np.abs(patch).sum(axis=a)) for a in ((1, 2), (0, 2), (0, 1)))
        assert (len(z), len(y), len(x)) == (12, 24, 32)  # padded on Z and Y, cropped on X
        inside = patch[z[0] : z[0] + 12, y[0] : y[0] + 24]
        assert any(np.array_equal(inside, small[:, :, o : o + 32]) for o in range(9))
        assert not patch[: z[0]].any() and not patch[z[-1] + 1 :].any()
        offsets.add((int(z[0]), int(y[0])))
    assert len(offsets) > 1  # the volume lies at a random offset in its padding


def recorded_volume_run(
    out, extra: list[str], stop_after: int | None = None, run: list[str] = RUN
) -> tuple[Pretrainer, list, list]:
    """A pretraining run of ``run`` + ``extra`` (stopped after ``stop_after`` steps): (trainer, each step's
    images, each step's loss)."""
    trainer = Pretrainer(parse([*run, *extra, "-o", str(out)]), setup_runtime("cpu"))
    trainer.setup()
    imgs, losses, train_step = [], [], trainer.train_step

    def recording_step(batches, generator):
        outcome = train_step(batches, generator)
        imgs.append(outcome.imgs), losses.append(trainer.last_loss)
        return outcome

    trainer.train_step = recording_step
    assert trainer.train(stop_after=stop_after) == 0
    return trainer, imgs, losses


@pytest.mark.parametrize("family", sorted(RUNS))
def test_a_3d_run_resumes_as_the_uninterrupted_one(family, volumes, tmp_path):
    """bf16 autocast, so 3D runs the loop's autocast path too; the checkpoint says it is 3D."""
    extra = ["--steps", "4", "--warmup-steps", "1", "--save-every", "100", "--precision", "bf16"]
    extra += ["--patch-size", "8", "16", "16"]
    run = RUNS[family]
    full, imgs, losses = recorded_volume_run(tmp_path / "full", extra, run=run)
    assert imgs[0].shape == (2, 1, 8, 16, 16)
    recorded_volume_run(tmp_path / "split", extra, stop_after=2, run=run)
    resumed, rest_imgs, rest_losses = recorded_volume_run(tmp_path / "split", extra, run=run)
    assert resumed.step == 4 and digest(rest_imgs) == digest(imgs[2:]) and rest_losses == losses[2:]
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    checkpoint = read_encoder_checkpoint(tmp_path / "split" / "encoder.safetensors")
    assert checkpoint.family == family and checkpoint.metadata["spatial_dims"] == 3
    key, value = ENCODER_CONFIG[family]
    assert checkpoint.encoder_config[key] == value
    assert checkpoint.metadata["mask"]["block_voxels"] == BLOCK_VOXELS[family]
    assert checkpoint.metadata["data_sources"]["patch_size"] == [8, 16, 16]


@pytest.mark.parametrize("family", sorted(RUNS))
def test_a_3d_run_defaults_to_the_plans_patch_and_previews_middle_slices(family, volumes, tmp_path):
    from PIL import Image

    out = tmp_path / "run"
    assert main([*RUNS[family], "-o", str(out), "--steps", "1", "--precision", "fp32", "--preview-every", "1"]) == 0
    checkpoint = read_encoder_checkpoint(out / "encoder.safetensors")
    assert checkpoint.metadata["data_sources"]["patch_size"] == [16, 32, 32]  # the plans' 3d_fullres patch
    preview = Image.open(out / "previews" / "step_0000001.png")
    assert preview.size == (2 * 32 + 2, 3 * 32)  # two samples side by side, three rows of Y x X slices


@pytest.mark.parametrize(
    ("family", "extra", "expected"),
    [
        (
            "cnn",
            ["--patch-size", "16", "32"],
            "--patch-size takes one side or one per axis Z Y X for volumes, got 2 values.",
        ),
        (
            "cnn",
            ["--patch-size", "16", "30", "32"],
            "--patch-size 16x30x32 must be a multiple of the mask block (2x4x4 voxels).",
        ),
        (
            "cnn",
            ["--cnn-mask-block", "2", "4"],
            "--cnn-mask-block takes one side or one per axis Z Y X for this 3D network",
        ),
        (
            "cnn",
            ["--cnn-mask-block", "2", "2", "4"],
            "--cnn-mask-block 2x2x4 must be a positive multiple of the encoder's",
        ),
        (
            "cnn",
            ["-i", "{folder}"],
            "A 3D encoder reads -i and --file-list volumes as nnU-Net preprocesses a dataset's",
        ),
        (
            "swin3d",
            ["--patch-size", "12", "32", "32"],
            "--patch-size 12x32x32 must be a multiple of the encoder's total stride 8x8x8 (encoder patch x 2^stages) "
            "on every axis.",
        ),
        (
            "swin3d",
            ["--mask-block", "4", "4", "3"],
            "--patch-size 16x32x32 must be a multiple of the mask block (4x4x3 patches = 8x8x6 voxels).",
        ),
        (
            "swin3d",
            ["--mask-ratio", "0.001"],
            "--mask-ratio 0.001 must hide at least one and keep at least one of the 256 mask blocks of a patch.",
        ),
        ("swin3d", ["--mask-ratio", "1"], "--mask-ratio must be between 0 and 1, got 1.0."),
        ("swin3d", ["--heads", "5", "5"], "Stage 0 has dimension 12, which --heads 5 does not divide."),
        ("swin3d", ["--heads", "3"], "depths (1, 1) and num_heads (3,) must have the same number of stages."),
        ("swin3d", ["--window", "2", "2"], "--window takes one side or one per axis Z Y X for volumes, got 2 values."),
        ("swin3d", ["-c", "2d"], "The plans have no configuration '2d' with a patch size (they have ['3d_fullres'])."),
        ("swin3d", ["-i", "{folder}"], "A 3D encoder reads -i and --file-list volumes as nnU-Net preprocesses"),
    ],
)
def test_bad_3d_settings_stop_with_one_sentence(family, extra, expected, volumes, tmp_path, capsys):
    (tmp_path / "images").mkdir()
    extra = [e.format(folder=tmp_path / "images") for e in extra]
    assert main([*RUNS[family], "-o", str(tmp_path / "run"), *extra]) == 2
    err = capsys.readouterr().err
    assert expected in err and len(err.strip().splitlines()) == 1, err


def test_a_2d_network_on_volumes_data_stops_with_one_sentence(volumes, tmp_path, capsys):
    """Plans whose 3d_fullres names a 2D network disagree with themselves."""
    plans_file = os.path.join(os.environ["nnUNet_preprocessed"], "Dataset003_Volumes", "nnUNetPlans.json")
    with open(plans_file) as f:
        plans = json.load(f)
    plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["conv_op"] = "torch.nn.modules.conv.Conv2d"
    with open(plans_file, "w") as f:
        json.dump(plans, f)
    assert main([*RUN, "-o", str(tmp_path / "run")]) == 2
    assert "has a 2D network but the patch size [16, 32, 32]; the plans disagree with themselves." in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize("family", sorted(RUNS))
def test_a_nan_loss_in_3d_is_skipped_without_touching_weights(family, volumes, tmp_path):
    out = tmp_path / "run"
    extra = ["--steps", "2", "--save-every", "100", "--precision", "fp32", "--patch-size", "8", "16", "16"]
    trainer = Pretrainer(parse([*RUNS[family], *extra, "-o", str(out)]), setup_runtime("cpu")).setup()
    _poison_losses(trainer, {2})
    assert trainer.train() == 0
    state = torch.load(out / "state.pt", weights_only=True)
    assert state["step"] == 2 and state["skipped_steps"] == 1 and state["data_position"] == 3 * 2
    assert all(torch.isfinite(v).all() for v in state["model"].values())


@pytest.mark.slow  # two new Python processes
@pytest.mark.parametrize("family", sorted(RUNS))
def test_two_process_ddp_on_volumes_keeps_ranks_identical(family, volumes, tmp_path):
    from tests.pretrain.test_pretrain_ddp import _free_port, _worker, run_ranks

    out = str(tmp_path / "run")
    argv = [*RUNS[family], "-o", out, "--steps", "2", "--save-every", "100", "--precision", "fp32"]
    argv += ["--patch-size", "8", "16", "16", "--lr", "1e-3"]
    result = str(tmp_path / "rank{rank}.pt")
    run_ranks(_worker, (2, _free_port(), argv, result))
    r0, r1 = (torch.load(result.format(rank=r), weights_only=True) for r in (0, 1))
    assert r0["wrapped"] and r1["wrapped"]
    assert r0["first_sample"].shape == (1, 8, 16, 16)
    assert not torch.equal(r0["first_sample"], r1["first_sample"])  # ranks read different volumes
    for name, p0 in r0["final"].items():
        assert torch.equal(p0, r1["final"][name]), name  # gradients were averaged
    assert any(not torch.equal(p, r0["initial"][n]) for n, p in r0["final"].items() if n.startswith("encoder."))
    assert read_encoder_checkpoint(os.path.join(out, "encoder.safetensors")).metadata["spatial_dims"] == 3
