"""``nnUNetv2_vismae_pack``: screen and convert a corpus of image files once into a pack of
normalized 2D slices that ``nnUNetv2_vismae_pretrain --pack`` reads one slice at a time.

    nnUNetv2_vismae_pack -i /data/ct /data/mr --axis all -o /shared/corpus.pack -np 16

or, for a 3D encoder, into a pack of whole volumes preprocessed as nnU-Net preprocesses dataset D's cases:

    nnUNetv2_vismae_pack -i /data/unlabeled --preprocess-like D -c 3d_fullres -o /shared/volumes.pack

The layouts: ``pretrain.data.pack`` (slices) and ``pretrain.data.pack_volumes`` (volumes). Killed or
interrupted, the same command continues where it stopped (every finished file is kept); one command at a time
per pack folder.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from nnunetv2_vismae.flags import OneSentenceParser, console_script, positive_int
from nnunetv2_vismae.io.images import SUPPORTED_ENDINGS
from nnunetv2_vismae.io.nnunet import CONFIGURATION_3D, configuration_dims, preprocessed_folder
from pretrain.data.files import discover_files
from pretrain.data.pack import INDEX_FILE, PackSource, write_pack
from pretrain.data.pack_volumes import VolumePackSource, write_volume_pack
from pretrain.data.unusable import UnusableFiles
from pretrain.errors import PretrainUserError
from pretrain.image_flags import add_image_file_arguments, normalization_from_args, validate_image_file_arguments

PROG = "nnUNetv2_vismae_pack"


def build_parser() -> argparse.ArgumentParser:
    p = OneSentenceParser(
        prog=PROG,
        description="Screen image files and store their normalized 2D slices (float16, blosc2) with an index in "
        "-o, for nnUNetv2_vismae_pretrain --pack. Unusable files are counted by reason and left out. Rerun the "
        "same command after a kill: finished files are kept.",
    )
    add_image_file_arguments(p.add_argument_group("input (all of it goes into one pack)"))
    like = p.add_argument_group("volumes (for a 3D encoder; --axis and --norm then do not apply)")
    like.add_argument(
        "--preprocess-like",
        metavar="DATASET",
        help="pack whole volumes preprocessed exactly as nnU-Net preprocessed this dataset's cases (its plans -p, "
        "configuration -c and intensity properties), in 3D chunks, for nnUNetv2_vismae_pretrain -c CONF --pack.",
    )
    like.add_argument("-c", default=CONFIGURATION_3D, help=f"a 3D configuration of -p (default {CONFIGURATION_3D}).")
    like.add_argument("-p", default="nnUNetPlans", help="nnU-Net plans identifier (default nnUNetPlans).")
    p.add_argument("-o", required=True, metavar="PACK", help="the pack folder (created; continued if it exists).")
    p.add_argument(
        "-np",
        type=positive_int,
        default=None,
        help="worker processes that screen and pack files (default: nnUNet_def_n_proc, else 8, as nnU-Net's; "
        "at most the CPU cores this process may use).",
    )
    return p


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity, which a batch scheduler sets)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def capped_processes(requested: int | None) -> int:
    """``-np``, at most one worker per core: more only multiply the memory of the images held at once
    (said when the user asked for more; nnU-Net's default is capped silently)."""
    cores = available_cores()
    if requested is None:
        return min(_default_processes(), cores)
    if requested <= cores:
        return requested
    print(f"-np {requested} is more than the {cores} CPU cores available; packing with {cores} processes.")
    return cores


def _default_processes() -> int:
    from nnunetv2.configuration import default_num_processes

    return default_num_processes


@console_script(PROG, resumes=True)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    validate_image_file_arguments(args)
    if not args.i and not args.file_list:
        raise PretrainUserError("No input given: use -i FOLDER and/or --file-list TXT.")
    files = discover_files(args.i, args.file_list)
    if not files:
        inputs = " ".join([*(args.i or []), *([args.file_list] if args.file_list else [])])
        raise PretrainUserError(f"{inputs} contains no supported image files ({' '.join(SUPPORTED_ENDINGS)}).")
    if args.preprocess_like:
        source = pack_volumes(args, files)
        print(f"Packed {len(source)} volumes into {args.o} (index {INDEX_FILE}).")
    else:
        write_pack(args.o, files, args.axis, normalization_from_args(args), capped_processes(args.np), PROG)
        source = PackSource(args.o)
        print(f"Packed {len(source)} slices of {len(source.files)} files into {args.o} (index {INDEX_FILE}).")
    unusable = UnusableFiles.from_sources([source], max_share=1.0)
    if unusable.entries:
        print(f"{unusable.describe()}; they are left out (listed in {os.path.join(args.o, INDEX_FILE)}).")
    return 0


def pack_volumes(args: argparse.Namespace, files: list[str]) -> VolumePackSource:
    """The pack of ``files`` preprocessed like ``--preprocess-like``'s dataset; its 3D configuration checked."""
    plans_file = os.path.join(preprocessed_folder(args.preprocess_like, PretrainUserError), f"{args.p}.json")
    if not os.path.isfile(plans_file):
        raise PretrainUserError(f"Plans file {plans_file} does not exist; check -p.")
    with open(plans_file) as f:
        plans = json.load(f)
    if configuration_dims(plans, args.c, PretrainUserError) != 3:
        raise PretrainUserError(
            f"Configuration {args.c} of {plans_file} is not 3D; volumes are packed for a 3D configuration such as "
            f"{CONFIGURATION_3D}."
        )
    like = (args.preprocess_like, args.p, args.c)
    write_volume_pack(args.o, files, like, capped_processes(args.np), PROG)
    return VolumePackSource(args.o, like)


if __name__ == "__main__":
    sys.exit(main())
