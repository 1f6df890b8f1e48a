"""Helpers shared by the pretraining tests (tiny settings, a tiny nnU-Net preprocessed dataset)."""

from __future__ import annotations

import json
import os

import numpy as np
import torch

from pretrain.masking import window_mask

# A 2-stage Swin (total stride 8), 32 x 32 patches, 2 x 2-patch mask blocks: seconds on 2 cores.
# bf16 explicitly, so the loop's autocast path runs even where ``auto`` picks fp32.
TINY = [
    "--embed-dim",
    "24",
    "--depths",
    "1",
    "1",
    "--heads",
    "3",
    "6",
    "--window",
    "4",
    "--patch-size",
    "32",
    "--mask-block",
    "2",
    "--batch-size",
    "2",
    "--workers",
    "0",
    "--preview-every",
    "0",
    "--drop-path",
    "0.0",
    "--precision",
    "bf16",
    "-device",
    "cpu",
]


def parse(argv: list[str]):
    from pretrain.cli import build_parser, validate_args

    args = build_parser().parse_args(argv)
    validate_args(args)
    return args


def write_nnunet_dataset(root, dataset_id=1, shapes=((1, 3, 40, 36), (1, 2, 28, 50))):
    """A tiny nnU-Net preprocessed dataset (plans + blosc2 cases) written with nnU-Net's dataset class."""
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2

    folder = os.path.join(root, f"Dataset{dataset_id:03d}_Tiny")
    data_folder = os.path.join(folder, "nnUNetPlans_2d")
    os.makedirs(data_folder)
    plans = {
        "dataset_name": f"Dataset{dataset_id:03d}_Tiny",
        "plans_name": "nnUNetPlans",
        "configurations": {
            "2d": {
                "data_identifier": "nnUNetPlans_2d",
                "spacing": [0.8, 0.8],
                "normalization_schemes": ["ZScoreNormalization"],
                "use_mask_for_norm": [False],
                "patch_size": [32, 32],
                "architecture": {"network_class_name": "x", "arch_kwargs": {}, "_kw_requires_import": []},
            }
        },
        "foreground_intensity_properties_per_channel": {"0": {"mean": 0.0, "std": 1.0}},
    }
    with open(os.path.join(folder, "nnUNetPlans.json"), "w") as f:
        json.dump(plans, f)
    rng = np.random.default_rng(1)
    cases = {}
    for i, shape in enumerate(shapes):
        data = rng.normal(size=shape).astype(np.float32)
        seg = np.zeros(shape, dtype=np.int8)
        chunks = blocks = (1, 1) + tuple(shape[2:])
        nnUNetDatasetBlosc2.save_case(
            data, seg, {"spacing": [1, 0.8, 0.8]}, os.path.join(data_folder, f"case{i}"), chunks=chunks, blocks=blocks
        )
        cases[f"case{i}"] = data
    return folder, cases


def training_losses(
    model, imgs, optimizer, steps: int, mask_ratio: float, grid: tuple[int, ...] = (8, 8)
) -> tuple[list[float], object]:
    """Losses of ``steps`` optimizer steps on one batch, each with a fresh mask of 2-cell blocks over ``grid``
    (the batch's grid of patches or cells: 8x8 of 4-pixel patches by default; seeded); also the last prediction."""
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(steps):
        loss, pred = model(imgs, window_mask(imgs.shape[0], grid, 2, mask_ratio, generator=generator))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses, pred


def tiny_volumes() -> torch.Tensor:
    """Two smooth 8 x 16 x 16 volumes (B x 1 x Z x Y x X) whose hidden voxels their visible ones predict."""
    zz, yy, xx = torch.meshgrid(torch.arange(8.0), torch.arange(16.0), torch.arange(16.0), indexing="ij")
    return torch.stack([torch.sin(xx / (3 + i)) + torch.cos(yy / 4) + torch.sin(zz / 3) for i in range(2)])[:, None]


# A small 3D PlainConvUNet: total stride 2 x 4 x 4 (Z downsampled once, as anisotropic plans do).
PLAIN_3D = {
    "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
    "arch_kwargs": {
        "n_stages": 3,
        "features_per_stage": [4, 8, 16],
        "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [[1, 3, 3], [3, 3, 3], [3, 3, 3]],
        "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2]],
        "n_conv_per_stage": [1, 1, 1],
        "n_conv_per_stage_decoder": [1, 1],
        "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    },
    "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
}
VOLUME_SHAPES = ((1, 16, 32, 32), (1, 20, 40, 36), (1, 12, 24, 40))  # the last smaller than the patch on Z and Y
VOLUME_CHUNKS = (1, 4, 8, 8)


def write_volume_dataset(root, dataset_id=3, architecture=PLAIN_3D, shapes=VOLUME_SHAPES):
    """A tiny nnU-Net preprocessed 3d_fullres dataset (plans naming ``architecture``, blosc2 cases in chunks of
    ``VOLUME_CHUNKS``) written with nnU-Net's dataset class; returns its folder and the cases' data."""
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2

    folder = os.path.join(root, f"Dataset{dataset_id:03d}_Volumes")
    data_folder = os.path.join(folder, "nnUNetPlans_3d_fullres")
    os.makedirs(data_folder)
    plans = {
        "dataset_name": f"Dataset{dataset_id:03d}_Volumes",
        "plans_name": "nnUNetPlans",
        "configurations": {
            "3d_fullres": {
                "data_identifier": "nnUNetPlans_3d_fullres",
                "spacing": [2.0, 0.8, 0.8],
                "normalization_schemes": ["ZScoreNormalization"],
                "use_mask_for_norm": [False],
                "patch_size": [16, 32, 32],
                "architecture": architecture,
            }
        },
        "foreground_intensity_properties_per_channel": {"0": {"mean": 0.0, "std": 1.0}},
    }
    with open(os.path.join(folder, "nnUNetPlans.json"), "w") as f:
        json.dump(plans, f)
    rng = np.random.default_rng(3)
    cases = {}
    for i, shape in enumerate(shapes):
        zz, yy, xx = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape[1:]), indexing="ij")
        data = (np.sin(xx / (3 + i)) + np.cos(yy / 4) + np.sin(zz / 2) + rng.normal(0, 0.1, shape[1:]))[None]
        data = data.astype(np.float32)
        nnUNetDatasetBlosc2.save_case(
            data,
            np.zeros(shape, dtype=np.int8),
            {"spacing": [2.0, 0.8, 0.8]},
            os.path.join(data_folder, f"case{i}"),
            chunks=VOLUME_CHUNKS,
            blocks=VOLUME_CHUNKS,
        )
        cases[f"case{i}"] = data
    return folder, cases
