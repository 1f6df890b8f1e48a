"""``nnUNetv2_vismae_pack``: screen and convert a corpus of image files once into a pack of
normalized 2D slices that ``nnUNetv2_vismae_pretrain --pack`` reads one slice at a time.

    nnUNetv2_vismae_pack -i /data/ct /data/mr --axis all -o /shared/corpus.pack -np 16

The layout and what a slice is: ``pretrain.data.pack``. Killed or interrupted, the same command
continues where it stopped (every finished file is kept); one command at a time per pack folder.
"""

from __future__ import annotations

import argparse
import os
import sys

from nnunetv2_vismae.flags import OneSentenceParser, console_script, positive_int
from nnunetv2_vismae.io.images import SUPPORTED_ENDINGS
from pretrain.data.files import discover_files
from pretrain.data.pack import INDEX_FILE, PackSource, write_pack
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
    normalization = normalization_from_args(args)
    write_pack(args.o, files, args.axis, normalization, capped_processes(args.np), PROG)
    source = PackSource(args.o)
    print(f"Packed {len(source)} slices of {len(source.files)} files into {args.o} (index {INDEX_FILE}).")
    unusable = UnusableFiles.from_sources([source], max_share=1.0)
    if unusable.entries:
        print(f"{unusable.describe()}; they are left out (listed in {os.path.join(args.o, INDEX_FILE)}).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
