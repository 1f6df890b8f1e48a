"""``nnUNetv2_vismae_convert``: foreign Swin weights (VIS-MAE / Swin-MAE, timm) -> encoder checkpoint;
nnssl checkpoints (``--from nnssl``) are ``nnssl.py``'s, MONAI's SwinUNETR weights (``--from monai``)
``monai_swin.py``'s.

    nnUNetv2_vismae_convert --from auto vismae_pretrain.pth encoder.safetensors
    nnUNetv2_vismae_convert --from timm swin_tiny.safetensors encoder.safetensors --in-channels 3

The file is read without running pickled code (``foreign_files``), the encoder config is read from
the tensors (``foreign_layouts.derive_swin_config``), the tensors are renamed to our encoder's
(timm's) names, the RGB stem is folded to ``--in-channels``, and the result is written with
``save_encoder_checkpoint`` and a ``converted_from`` metadata record. Before the file appears under
its name it is read back and loaded into a ``SwinUNet`` built from the derived config; anything short
of a complete, unadapted load fails the command and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from nnunetv2_vismae.flags import OneSentenceParser, console_script

from .conversion import CONVERTER, ConversionResult, file_sha256, require_complete_load, write_verified


def verify_loads_completely(checkpoint, log: Callable[[str], object] = print):
    """Build a SwinUNet from the checkpoint's config, load it with ``load_encoder_into`` and
    require every encoder tensor to be loaded as is."""
    from nnunetv2_vismae.architectures.swin_unet import SwinUNet

    from .loader import load_encoder_into

    config = checkpoint.encoder_config
    network = SwinUNet(config["in_channels"], 2, encoder=config, decoder="conv")
    return require_complete_load(load_encoder_into(network, checkpoint, log=log), "SwinUNet")


@dataclass
class ForeignEncoder:
    """A foreign file's Swin encoder: its tensors under our encoder's names (nothing copied yet) and the
    config they imply."""

    foreign: object  # ForeignFile, as read
    layout: str  # the one converted from
    detected: str  # the one the key names show
    mapped: object  # MappedWeights
    config: dict


def check_request(src: Path, dst: Path, source: str, in_channels) -> None:
    """CheckpointError for a layout or channel count we do not convert, and for an output that cannot be
    written, is the input, or is a folder."""
    from nnunetv2_vismae.io.folders import unwritable_reason

    from .errors import CheckpointError
    from .foreign_layouts import LAYOUTS
    from .monai_swin import MONAI
    from .nnssl import NNSSL

    if source not in LAYOUTS + (NNSSL, MONAI, "auto"):
        raise CheckpointError(f"--from {source!r} is not one of {list(LAYOUTS) + [NNSSL, MONAI, 'auto']}.")
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise CheckpointError(f"--in-channels {in_channels!r} must be a positive integer.")
    problem = unwritable_reason(dst.parent)
    try:
        exists = dst.exists()
    except OSError as e:  # a name longer than the file system allows
        problem = (e.strerror or str(e)).lower()
    if problem:
        raise CheckpointError(f"Cannot write {dst}: {problem}.")
    if exists and src.exists() and dst.resolve() == src.resolve():
        raise CheckpointError(f"Output {dst} is the input file; choose another output path.")
    if dst.is_dir():
        raise CheckpointError(
            f"Output {dst} is a folder; give the checkpoint file to write, e.g. {dst / 'encoder.safetensors'}."
        )


def read_foreign_encoder(src: Path, source: str, where: str) -> ForeignEncoder:
    """Read ``src`` without running pickled code, detect its layout (``source`` "auto") and map its tensors
    to our encoder's names; the config is read from the tensors."""
    from .foreign_files import read_foreign_file
    from .foreign_layouts import (
        SHIFTS_SINGLE_WINDOW_STAGES,
        derive_swin_config,
        detect_layout,
        map_to_encoder_names,
        strip_module_prefix,
    )

    foreign = read_foreign_file(src)
    state = strip_module_prefix(foreign.state_dict)
    detected = detect_layout(state, where)
    layout = detected if source == "auto" else source
    mapped = map_to_encoder_names(state, layout, where)
    config = derive_swin_config(mapped.tensors, where)
    config["shift_single_window_stages"] = SHIFTS_SINGLE_WINDOW_STAGES[layout]
    return ForeignEncoder(foreign, layout, detected, mapped, config)


def check_shapes(encoder: ForeignEncoder, where: str) -> None:
    """The format's check that the tensors are exactly the encoder's names and shapes; it reads shapes
    only, so it runs before any value is copied."""
    from .families import SWIN
    from .format import check_tensor_set

    check_tensor_set(SWIN, encoder.config, encoder.mapped.tensors, where)


def fold_stem(tensors: dict, config: dict, in_channels: int) -> str:
    """Fold the stem in ``tensors`` to ``in_channels`` and set them in ``config``; returns what was done."""
    from .foreign_layouts import fold_input_channels

    source_channels = config["in_channels"]
    config["in_channels"] = in_channels
    if in_channels == source_channels:
        return f"{source_channels} input channels, unchanged"
    tensors["patch_embed.proj.weight"] = fold_input_channels(tensors["patch_embed.proj.weight"], in_channels)
    return f"{source_channels} -> {in_channels} input channels (summed over the source channels" + (
        ")" if in_channels == 1 else f", then repeated and divided by {in_channels})"
    )


def conversion_metadata(src: Path, encoder: ForeignEncoder, source_channels: int, stem: str) -> dict:
    """The checkpoint's metadata: the converted config, the input the weights expect, and a
    ``converted_from`` record of the source file and of what the conversion did."""
    from .foreign_layouts import imagenet_normalization

    mapped = encoder.mapped
    record = {
        "layout": encoder.layout,
        "detected_layout": encoder.detected,
        "file": src.name,
        "sha256": file_sha256(src),
        "container": encoder.foreign.container,
        "converted_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "converter": CONVERTER,
        "patch_merging": (
            "moved from the end of stage i to the start of stage i+1"
            if mapped.downsample == "end"
            else "at the start of stages, unchanged"
        ),
        "merge_order_permuted": mapped.merge_permuted,
        "stem": stem,
        "dropped": mapped.dropped,
        **encoder.foreign.extras,
    }
    from .families import SWIN  # every foreign layout holds a Swin encoder

    return {
        "family": SWIN.name,
        "encoder_config": encoder.config,
        "normalization": imagenet_normalization(encoder.layout, source_channels, encoder.config["in_channels"]),
        "converted_from": record,
    }


def log_conversion(src: Path, encoder: ForeignEncoder, metadata: dict, auto: bool, log: Callable) -> None:
    record, config = metadata["converted_from"], encoder.config
    log(
        f"Read {src} ({encoder.foreign.container}, {len(encoder.foreign.state_dict)} tensors): {encoder.layout} "
        "layout" + (" (detected)" if auto else "") + f", patch merging {record['patch_merging']}."
    )
    dropped = encoder.mapped.dropped
    if dropped:
        groups = ", ".join(f"{k} {n}" for k, n in dropped.items())
        log(f"Dropped {sum(dropped.values())} tensors that are not part of the encoder: {groups}.")
    if not config["final_norm"]:
        log("No final encoder norm in the source (as in the original VIS-MAE encoder): the last stage stays unnormed.")
    log(f"Stem: {record['stem']}; normalization {metadata['normalization']['scheme']}.")
    log(f"Encoder config (from the tensors): {json.dumps(config)}")


def convert(
    source_path,
    output_path,
    source: str = "auto",
    in_channels: int = 1,
    log: Callable[[str], object] = print,
    license_text: str | None = None,
    cite=(),
    merge_order: str | None = None,
) -> ConversionResult:
    """Convert foreign Swin weights, an nnssl checkpoint (``nnssl.convert_nnssl``) or MONAI SwinUNETR weights
    (``monai_swin.convert_monai``, in the patch-merging order ``merge_order``, default by source) to an
    encoder checkpoint at ``output_path`` (see module doc), recording the licence and citations given.
    Raises CheckpointError, leaving ``output_path`` untouched, on any problem."""
    from .citations import add_attribution
    from .foreign_layouts import float32_copies
    from .monai_swin import MONAI, convert_monai
    from .nnssl import NNSSL, convert_nnssl

    src, dst = Path(source_path), Path(output_path)
    check_request(src, dst, source, in_channels)
    if source == NNSSL:
        return convert_nnssl(src, dst, log, license_text, cite)
    if source == MONAI:
        return convert_monai(src, dst, log, license_text, cite, merge_order)
    where = f"Input weights {src}"
    encoder = read_foreign_encoder(src, source, where)
    check_shapes(encoder, f"{where} ({encoder.layout} layout)")
    tensors = float32_copies(encoder.mapped)  # the first copy of any value, now that every shape is the encoder's
    source_channels = encoder.config["in_channels"]
    stem = fold_stem(tensors, encoder.config, in_channels)
    metadata = add_attribution(conversion_metadata(src, encoder, source_channels, stem), license_text, cite, src.name)
    log_conversion(src, encoder, metadata, source == "auto", log)
    return write_verified(dst, tensors, metadata, log, verify_loads_completely)


def build_parser() -> argparse.ArgumentParser:
    from nnunetv2_vismae.architectures.swin3d_encoder import MERGE_OFFSETS

    parser = OneSentenceParser(
        prog=CONVERTER,
        description="Convert foreign weights into an nnunetv2_vismae encoder checkpoint (.safetensors): "
        "the original VIS-MAE / Swin-MAE pretraining files (torch.save with a 'model' state dict) or "
        "timm Swin state dicts (.safetensors or .pth), read into the swin family, nnssl "
        "checkpoints (the public OpenMind weights), read into the cnn family, and MONAI SwinUNETR "
        "weights (Tang et al.'s self-supervised SwinViT too), read into the 3D Swin family. The encoder "
        "config is read from the tensors (Swin) or the nnssl adaptation plan; the result is verified by "
        "loading it into the network it names before it is written.",
    )
    parser.add_argument(
        "--from",
        dest="source",
        choices=["vismae", "timm", "nnssl", "monai", "auto"],
        default="auto",
        help="layout of IN: vismae (VIS-MAE/Swin-MAE pretraining file: decoder, "
        "mask token and position embedding are dropped), timm (timm Swin, "
        "current or older layout: head dropped), nnssl (a checkpoint nnssl's save_checkpoint "
        "wrote: the stem and encoder of its adaptation plan's network are kept), monai (a SwinUNETR "
        "state dict, or Tang et al.'s self-supervised SwinViT checkpoint such as model_swinvit.pt: "
        "the encoder is kept, decoder and heads dropped), or auto "
        "(a Swin layout detected from the key names; default)",
    )
    parser.add_argument(
        "input",
        metavar="IN",
        help="foreign weights (.pth/.pt torch.save file, loaded with weights_only=True, or .safetensors)",
    )
    parser.add_argument("output", metavar="OUT", help="encoder checkpoint to write (.safetensors)")
    parser.add_argument(
        "--in-channels",
        type=int,
        default=None,
        metavar="N",
        help="Swin layouts: input channels of the converted stem (default 1): the RGB stem is "
        "summed over its channels, and for N > 1 repeated and divided by N; "
        "N equal to the source's channels keeps the stem unchanged (nnssl: the plan's channels "
        "are kept, and fine-tuning adapts them)",
    )
    parser.add_argument(
        "--merge-order",
        choices=sorted(MERGE_OFFSETS),
        default=None,
        help="monai: the patch-merging order of the MONAI version the weights were trained with "
        "(monai-1.4 for MONAI < 1.5, the default: every public SwinUNETR weight predates 1.5; "
        "monai-1.5 for weights trained with MONAI >= 1.5); recorded in the checkpoint",
    )
    parser.add_argument(
        "--license", dest="license_text", metavar="TEXT", help="licence of the weights, recorded (e.g. CC-BY-4.0)"
    )
    parser.add_argument(
        "--cite",
        action="append",
        default=[],
        metavar="TEXT",
        help="a paper to cite for the weights, recorded and printed when fine-tuning loads them (repeatable)",
    )
    return parser


@console_script(CONVERTER)
def main(argv=None) -> int:
    from .errors import CheckpointError
    from .monai_swin import MONAI
    from .nnssl import NNSSL

    args = build_parser().parse_args(argv)
    if args.source in (NNSSL, MONAI) and args.in_channels is not None:
        raise CheckpointError(
            f"--in-channels applies to 2D Swin layouts; --from {args.source} keeps the input channels of the "
            "weights, and fine-tuning adapts their stem to the dataset's."
        )
    if args.merge_order is not None and args.source != MONAI:
        raise CheckpointError("--merge-order applies to --from monai only (a MONAI 3D Swin's patch merging).")
    # timm's import-time deprecation noise must not bury the one-line error of a bad file
    warnings.filterwarnings("ignore", category=FutureWarning)
    in_channels = 1 if args.in_channels is None else args.in_channels
    convert(
        args.input,
        args.output,
        args.source,
        in_channels,
        license_text=args.license_text,
        cite=args.cite,
        merge_order=args.merge_order,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
