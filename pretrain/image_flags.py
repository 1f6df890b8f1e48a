"""The flags naming image files and how they are sliced and normalized, shared by ``nnUNetv2_vismae_pretrain``
and ``nnUNetv2_vismae_pack``; torch-free, so that the packer and its spawned workers start without it."""

from __future__ import annotations

import argparse

from nnunetv2_vismae.io.normalization import Normalization
from pretrain.errors import PretrainUserError


def add_image_file_arguments(group) -> None:
    """The flags naming image files and how they are sliced and normalized (pretraining, packing)."""
    group.add_argument(
        "-i",
        nargs="+",
        metavar="FOLDER",
        help="folders searched recursively for PNG/JPG/BMP/TIFF, DICOM (.dcm) and NIfTI/MHA/NRRD files.",
    )
    group.add_argument("--file-list", metavar="TXT", help="text file naming one image per line (relative to the file).")
    group.add_argument(
        "--axis",
        choices=["0", "1", "2", "all"],
        default="0",
        help="volumes are cut into 2D slices along this array axis (0 = z), or all three (default 0).",
    )
    group.add_argument(
        "--norm",
        choices=["zscore", "ct"],
        default="zscore",
        help="per-image normalization of -i/--file-list images, as nnU-Net's schemes (default zscore).",
    )
    group.add_argument("--ct-clip", type=float, nargs=2, metavar=("LO", "HI"), help="CT window for --norm ct.")
    group.add_argument(
        "--ct-stats",
        type=float,
        nargs=2,
        metavar=("MEAN", "STD"),
        help="for --norm ct: mean/std after clipping (the fine-tuning dataset's foreground "
        "intensity properties); default: each image's own.",
    )


def validate_image_file_arguments(args: argparse.Namespace) -> None:
    if args.norm == "ct" and not args.ct_clip:
        raise PretrainUserError("--norm ct needs --ct-clip LO HI (the CT intensity window).")
    if args.ct_clip and args.ct_clip[0] >= args.ct_clip[1]:
        raise PretrainUserError(f"--ct-clip needs LO < HI, got {args.ct_clip[0]} {args.ct_clip[1]}.")
    if args.ct_stats and args.ct_stats[1] <= 0:
        raise PretrainUserError(f"--ct-stats needs a positive STD, got {args.ct_stats[1]}.")


def normalization_from_args(args: argparse.Namespace) -> Normalization:
    """The normalization of image files that ``--norm``, ``--ct-clip`` and ``--ct-stats`` give."""
    return Normalization(
        args.norm, tuple(args.ct_clip) if args.ct_clip else None, tuple(args.ct_stats) if args.ct_stats else None
    )
