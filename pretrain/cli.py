"""``nnUNetv2_vismae_pretrain``: masked-autoencoder pretraining of an encoder on unlabeled images.

Single process:  nnUNetv2_vismae_pretrain -i /data/xrays -o /runs/mae -device cuda
Multi-GPU/node:  torchrun --nproc_per_node 8 $(which nnUNetv2_vismae_pretrain) -d 1 2 -o /runs/mae
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

warnings.filterwarnings("ignore", message=r".*torch\.jit\.interface.*", category=FutureWarning)

from nnunetv2_vismae.flags import (  # noqa: E402
    OneSentenceParser,
    console_script,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)
from nnunetv2_vismae.io.nnunet import CONFIGURATION_2D  # noqa: E402
from nnunetv2_vismae.io.run_files import ENCODER_FILE, STATE_FILE  # noqa: E402
from pretrain.config import DEFAULT_PATCH_SIZE, PROG  # noqa: E402
from pretrain.errors import PretrainUserError  # noqa: E402
from pretrain.families import DEFAULT_FAMILY, FAMILIES  # noqa: E402
from pretrain.image_flags import add_image_file_arguments, validate_image_file_arguments  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = OneSentenceParser(
        prog=PROG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "VIS-MAE pretraining: a masked autoencoder learns an encoder from unlabeled 2D images (slices), or\n"
            "with --encoder swin3d (or cnn on a 3D configuration, -c 3d_fullres) from nnU-Net's preprocessed volumes.\n"
            f"Writes -o/{ENCODER_FILE} (the encoder checkpoint that nnUNetv2_vismae_plan and the VisMAE\n"
            f"trainers load), {STATE_FILE} (resumable: rerun the same command to continue), log.csv, loss.png\n"
            "and previews/. Multi-GPU and multi-node: launch with torchrun (DDP; nccl on cuda, gloo on cpu);\n"
            "-o must then be on a file system all nodes share."
        ),
    )
    data = p.add_argument_group(
        "data (sources can be mixed; each -d dataset, -i folder, --file-list and --pack is one source)"
    )
    data.add_argument(
        "-d",
        nargs="+",
        metavar="DATASET",
        help="nnU-Net preprocessed dataset ids or names (needs nnUNet_preprocessed); random 2D "
        "patches (3D crops for a 3D encoder) of the preprocessed, already normalized data, as fine-tuning sees them.",
    )
    data.add_argument("-c", default=CONFIGURATION_2D, help=f"nnU-Net configuration of -d (default {CONFIGURATION_2D}).")
    data.add_argument("-p", default="nnUNetPlans", help="nnU-Net plans identifier of -d (default nnUNetPlans).")
    data.add_argument(
        "--plans-of",
        metavar="DATASET",
        help="the dataset whose plans -p/-c the encoder follows (the cnn family's network, the swin3d family's "
        "default patch), without pretraining on its images (e.g. pretrain on -i unlabeled folders only; default: the "
        "first -d).",
    )
    add_image_file_arguments(data)
    data.add_argument(
        "--preprocess-like",
        metavar="DATASET",
        help="preprocess each -i / --file-list image (one channel) exactly as nnU-Net preprocessed this dataset's "
        "cases (its plans -p, configuration -c and intensity properties), once, into -o/preprocessed_like/, and "
        "read them as its preprocessed cases (--axis and --norm then do not apply); needed for volumes with a 3D "
        "encoder.",
    )
    data.add_argument(
        "--pack",
        nargs="+",
        metavar="PACK",
        help="packs written by nnUNetv2_vismae_pack (screened, normalized 2D slices read one at a time, or for a "
        "3D encoder volumes packed with --preprocess-like of the plans -p/-c, read as lazy 3D crops; each pack is "
        "one source, its --axis and --norm are the pack's own).",
    )
    data.add_argument(
        "--source-weights",
        type=float,
        nargs="+",
        metavar="W",
        help="sampling weight per source, in the order -d..., -i..., --file-list, --pack... (default: "
        "proportional to each source's number of slices).",
    )
    data.add_argument(
        "--max-unusable",
        type=float,
        default=0.1,
        metavar="SHARE",
        help="stop when more than this share of the files is unusable (empty, truncated, "
        "undecodable, NaN/Inf, constant, ...; counted by reason and skipped otherwise) "
        "(default 0.1).",
    )
    data.add_argument(
        "--accept-changed-data",
        action="store_true",
        help=f"resume although the data changed since {STATE_FILE} was saved (files added or removed, a pack "
        "packed again): the run goes on over the data of now; without it such a resume stops.",
    )
    data.add_argument(
        "--patch-size",
        type=positive_int,
        nargs="+",
        help="training patch: one side of a square in pixels, or for a 3D encoder one side of a cube or one per "
        "axis Z Y X in voxels; smaller images are zero-padded (default "
        f"{DEFAULT_PATCH_SIZE} in 2D, the patch size of -c in the plans in 3D).",
    )

    p.add_argument(
        "-o", required=True, metavar="DIR", help=f"output folder (created; resumed from if it holds {STATE_FILE})."
    )
    p.add_argument(
        "--encoder",
        "--family",
        dest="family",
        choices=sorted(FAMILIES),
        default=DEFAULT_FAMILY,
        help="encoder family: swin (VIS-MAE's Swin, for SwinUNet), swin3d (a 3D Swin in SwinUNETR's layout, for "
        "Swin3dUNet, on volumes of -c 3d_fullres) or cnn (the encoder of nnU-Net's own 2D or 3D network, built from "
        f"the plans of the first -d dataset, -p/-c) (default {DEFAULT_FAMILY}).",
    )
    for family in FAMILIES.values():
        family.options_type.add_arguments(p)

    t = p.add_argument_group("training")
    t.add_argument("--steps", type=positive_int, default=10000, help="total optimizer steps (default 10000).")
    t.add_argument(
        "--epochs",
        type=positive_float,
        help="instead of --steps: passes over the corpus (steps = epochs * slices / effective batch).",
    )
    t.add_argument(
        "--batch-size", type=positive_int, default=32, help="images per GPU/process per micro-step (default 32)."
    )
    t.add_argument(
        "--accum",
        type=positive_int,
        default=1,
        help="gradient accumulation micro-steps per optimizer step (default 1).",
    )
    t.add_argument(
        "--blr",
        type=positive_float,
        default=1e-3,
        help="base learning rate; the learning rate is "
        "blr * effective_batch / 256 with effective_batch = batch-size * accum * world size (default 1e-3).",
    )
    t.add_argument("--lr", type=positive_float, help="absolute learning rate (overrides --blr scaling).")
    t.add_argument(
        "--warmup-steps",
        type=non_negative_int,
        help="linear warmup steps before the cosine decay (default steps / 80, VIS-MAE's 10 of 800 epochs).",
    )
    t.add_argument(
        "--weight-decay",
        type=non_negative_float,
        default=0.05,
        help="AdamW weight decay, betas (0.9, 0.95) (default 0.05).",
    )
    t.add_argument(
        "--precision",
        choices=["auto", "bf16", "fp32"],
        default="auto",
        help="bf16 autocast or fp32; auto = bf16 on CUDA and on CPUs with native bf16 (AVX512-BF16/AMX), "
        "fp32 on other CPUs, where bf16 is emulated and ~20x slower (default auto).",
    )
    t.add_argument(
        "-device",
        "--device",
        dest="device",
        choices=["cpu", "cuda"],
        default=None,
        help="cpu or cuda (default cuda when available, else cpu).",
    )
    t.add_argument(
        "--compile",
        action="store_true",
        help="compile the model with torch.compile (the first step waits for the compilation; off by default: "
        "its gain on a GPU is not measured yet).",
    )
    t.add_argument(
        "--workers", type=non_negative_int, default=4, help="data-loader worker processes per GPU/process (default 4)."
    )
    t.add_argument("--seed", type=int, default=0, help="random seed (default 0).")
    t.add_argument(
        "--max-bad-steps",
        type=positive_int,
        default=5,
        metavar="N",
        help="a step with a NaN/Inf loss or gradient is skipped; stop after N in a row (default 5).",
    )
    t.add_argument(
        "--save-every",
        type=positive_int,
        default=500,
        help=f"write {STATE_FILE} and {ENCODER_FILE} every N steps "
        "(default 500; also at the end and on SIGTERM/SIGINT).",
    )
    t.add_argument(
        "--preview-every",
        type=non_negative_int,
        default=500,
        help="write previews/step_N.png (original | masked | reconstruction) every N steps; 0 = never (default 500).",
    )
    return p


def validate_args(args: argparse.Namespace) -> None:
    if not 0 <= args.max_unusable <= 1:
        raise PretrainUserError(f"--max-unusable is a share between 0 and 1, got {args.max_unusable}.")
    validate_image_file_arguments(args)
    if args.source_weights is not None:
        n = len(args.d or []) + len(args.i or []) + (1 if args.file_list else 0) + len(args.pack or [])
        if len(args.source_weights) != n:
            raise PretrainUserError(
                f"--source-weights needs one weight per source ({n}), got {len(args.source_weights)}."
            )
        if any(w < 0 for w in args.source_weights) or sum(args.source_weights) <= 0:
            raise PretrainUserError("--source-weights must be non-negative and not all zero.")
    if os.path.exists(args.o) and not os.path.isdir(args.o):
        raise PretrainUserError(f"Output {args.o} exists and is not a folder.")
    check_output_outside_inputs(args.o, args.i or [])
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"


def check_output_outside_inputs(output: str, folders: list[str]) -> None:
    """Refuse an -o inside an -i folder: every resume would find the run's own previews and plots there."""
    out = os.path.realpath(output)
    for folder in folders:
        if os.path.commonpath([out, os.path.realpath(folder)]) == os.path.realpath(folder):
            raise PretrainUserError(
                f"Output folder {output} is in input folder {folder}, where a run would train on its own "
                "previews and plots; choose an -o outside every -i folder."
            )


@console_script(PROG, resumes=True)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    validate_args(args)
    from pretrain.runtime import setup_runtime
    from pretrain.train import Pretrainer

    runtime = setup_runtime(args.device)
    try:
        return Pretrainer(args, runtime).setup().train()
    finally:
        runtime.shutdown()


if __name__ == "__main__":
    sys.exit(main())
