"""The typed settings a pretraining run is built from: ``PretrainConfig.from_args`` reads the flags of
``nnUNetv2_vismae_pretrain`` once, so nothing past the command line knows argparse's names.

The defaults live in one place, the parser (``pretrain.cli.build_parser``); every field here is
required.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from nnunetv2_vismae.io.normalization import Normalization
from pretrain.families import FAMILIES
from pretrain.families.base import FamilyOptions
from pretrain.image_flags import normalization_from_args

PROG = "nnUNetv2_vismae_pretrain"  # the command that makes a config; also the owner named in the output folder's lock
DEFAULT_PATCH_SIZE = 224  # of 2D patches, VIS-MAE's input; volumes default to their plans' patch size


@dataclass(frozen=True)
class PretrainConfig:
    output: str  # -o
    family: str  # --encoder
    family_options: FamilyOptions  # the family's own flags
    # data: each dataset, folder, the file list and each pack is one source, weighted in that order
    datasets: tuple[str, ...]  # -d, with the configuration -c and plans -p
    configuration: str
    plans: str
    folders: tuple[str, ...]  # -i
    file_list: str | None
    packs: tuple[str, ...]  # --pack: folders written by nnUNetv2_vismae_pack, after the file sources
    preprocess_like: str | None  # --preprocess-like: -i / --file-list preprocessed as this dataset's cases
    axis: str
    normalization: Normalization  # of -i / --file-list images
    source_weights: tuple[float, ...] | None
    max_unusable: float
    accept_changed_data: bool  # resume although the corpus changed since state.pt
    patch_size: tuple[int, ...] | None  # as given: one side, or one per axis; None: the default
    # training
    steps: int
    epochs: float | None
    batch_size: int  # per process and micro-step
    accum: int
    blr: float
    lr: float | None
    warmup_steps: int | None
    weight_decay: float
    precision: str
    device: str
    workers: int
    seed: int
    max_bad_steps: int
    save_every: int
    preview_every: int
    compile: bool

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "PretrainConfig":
        """The config of parsed (and validated) command-line flags."""
        return cls(
            output=args.o,
            family=args.family,
            family_options=FAMILIES[args.family].options_type.from_args(args),
            datasets=tuple(args.d or ()),
            configuration=args.c,
            plans=args.p,
            folders=tuple(args.i or ()),
            file_list=args.file_list,
            packs=tuple(args.pack or ()),
            preprocess_like=args.preprocess_like,
            axis=args.axis,
            normalization=normalization_from_args(args),
            source_weights=None if args.source_weights is None else tuple(args.source_weights),
            patch_size=None if args.patch_size is None else tuple(args.patch_size),
            **{
                name: getattr(args, name)
                for name in (
                    "max_unusable",
                    "accept_changed_data",
                    "steps",
                    "epochs",
                    "batch_size",
                    "accum",
                    "blr",
                    "lr",
                    "warmup_steps",
                    "weight_decay",
                    "precision",
                    "device",
                    "workers",
                    "seed",
                    "max_bad_steps",
                    "save_every",
                    "preview_every",
                    "compile",
                )
            },
        )
