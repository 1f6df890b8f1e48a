"""``nnUNetv2_vismae_inspect FILE``: print an encoder checkpoint's metadata and tensor summary."""

from __future__ import annotations

import json
import os
import sys
import warnings
from collections import OrderedDict

from nnunetv2_vismae.flags import OneSentenceParser, console_script

PROG = "nnUNetv2_vismae_inspect"


def tensor_groups(tensors) -> "OrderedDict[str, dict]":
    """Top-level groups of tensor names (``patch_embed``, ``layers.0``, ..., ``norm``): the first
    name component, plus the index when that component is a container (``layers.0``)."""
    groups: "OrderedDict[str, dict]" = OrderedDict()
    for name, t in tensors.items():
        parts = name.split(".")
        key = ".".join(parts[:2]) if len(parts) > 2 and parts[1].isdigit() else parts[0]
        g = groups.setdefault(key, {"tensors": 0, "parameters": 0, "dtypes": set()})
        g["tensors"] += 1
        g["parameters"] += t.numel()
        g["dtypes"].add(str(t.dtype).removeprefix("torch."))
    return groups


def printable(text) -> str:
    """``text`` with every non-printable character (escape sequences, bidi controls, newlines)
    written as its Python escape, so that a crafted name cannot drive the terminal."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(text))


_NESTED_LINES = 6  # dict levels printed one entry per line; deeper ones as JSON


def _pretty(value, indent: str) -> str:
    """Dicts one entry per line; everything else (lists included) as compact ASCII JSON."""
    if isinstance(value, dict) and value and len(indent) < 2 * _NESTED_LINES:
        return "".join(f"\n{indent}{printable(k)}:{_pretty(v, indent + '  ')}" for k, v in value.items())
    return " " + json.dumps(value, ensure_ascii=True)


def format_checkpoint(checkpoint, file_size: int | None = None) -> str:
    """Metadata and tensor groups of a checkpoint as read (tensors in the encoder's order); builds
    no model, and escapes what it prints from the file."""
    size = f" ({file_size / 2**20:.1f} MiB)" if file_size is not None else ""
    lines = [f"Encoder checkpoint {printable(checkpoint.path)}{size}", "", "Metadata:"]
    first = ["format", "format_version", "family", "spatial_dims", "content_hash", "encoder_config", "normalization"]
    # a 2D file has no spatial_dims entry: shown all the same, as what it reads as
    metadata = {**checkpoint.metadata, "spatial_dims": checkpoint.spatial_dims}
    keys = [k for k in first if k in metadata]
    keys += sorted(k for k in metadata if k not in first)
    for key in keys:
        lines.append(f"  {printable(key)}:{_pretty(metadata[key], '    ')}")

    tensors = checkpoint.tensors
    total = sum(t.numel() for t in tensors.values())
    dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in tensors.values()})
    lines += ["", f"Tensors: {len(tensors)}, {total:,} parameters, dtype {', '.join(dtypes)}"]
    groups = OrderedDict((printable(k), g) for k, g in tensor_groups(tensors).items())
    width = max([len("group")] + [len(k) for k in groups])
    lines.append(f"  {'group':<{width}}  {'tensors':>7}  {'parameters':>12}  dtype")
    for name in groups:
        g = groups[name]
        lines.append(f"  {name:<{width}}  {g['tensors']:>7}  {g['parameters']:>12,}  {', '.join(sorted(g['dtypes']))}")
    return "\n".join(lines)


@console_script(PROG)
def main(argv=None) -> int:
    parser = OneSentenceParser(
        prog=PROG,
        description="Print the metadata and a tensor summary of an nnunetv2_vismae encoder "
        "checkpoint (.safetensors). The content hash is verified.",
    )
    parser.add_argument("file", metavar="FILE", help="encoder checkpoint (.safetensors)")
    args = parser.parse_args(argv)

    # timm's import-time deprecation noise must not bury the one-line error of a bad file
    warnings.filterwarnings("ignore", category=FutureWarning)
    from .format import read_encoder_checkpoint

    checkpoint = read_encoder_checkpoint(args.file)
    print(format_checkpoint(checkpoint, os.path.getsize(args.file)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
