"""MONAI's SwinUNETR weights (``--from monai``) -> an encoder checkpoint of the 3D Swin family.

    nnUNetv2_vismae_convert --from monai model_swinvit.pt swinvit.safetensors

Read with ``foreign_files`` (``torch.load(weights_only=True)`` or safetensors; a state dict, or one under
``state_dict`` / ``model``; ``module.`` prefixes of DistributedDataParallel removed), three layouts hold
MONAI's ``SwinTransformer`` (SwinUNETR's ``swinViT``):

- a ``SwinUNETR`` state dict: the encoder under ``swinViT.``; the convolutional decoder is dropped;
- the ``SSLHead`` that Project-MONAI/research-contributions' SwinUNETR/Pretrain saves (Tang et al., CVPR
  2022): the encoder under ``swinViT.`` (``swin_vit.`` in the spelling SwinUNETR/BTCV renames), the
  rotation, contrastive and reconstruction heads dropped;
- the encoder's own state dict, as the public ``model_swinvit.pt`` holds it (``module.layers1.0...``, MLP
  named ``fc1`` / ``fc2`` by Tang et al.'s code, which MONAI's ``load_from`` renames to ``linear1`` /
  ``linear2``).

The encoder config is read from the tensor shapes (``derive_swin3d_config``); its ``merge_offsets`` is not
in the tensors and comes from ``--merge-order`` or the default: MONAI before 1.5 concatenated the voxels
of a 2x2x2 cell in another order than since (``MERGE_OFFSETS``), and the public weights (Tang et al.'s,
MONAI 0.8 era; the model zoo's SwinUNETR bundles, MONAI <= 1.4) were trained before 1.5.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Mapping

import torch

from nnunetv2_vismae.architectures.swin3d_encoder import MERGE_OFFSETS, monai_to_ours, relative_position_index

from .errors import CheckpointError

MONAI = "monai"
# weights trained before MONAI 1.5, as every public SwinUNETR weight file is (see the module doc)
DEFAULT_MERGE_ORDER = "monai-1.4"
# where the encoder lives in each layout: SwinUNETR and SSLHead; the spelling SwinUNETR/BTCV renames from;
# the encoder's own state dict
ENCODER_PREFIXES = ("swinViT.", "swin_vit.", "")
_BARE_ENCODER_KEY = re.compile(r"^(patch_embed|layers\d+\w*)\.")
_V2_KEY = re.compile(r"^layers\d+c\.")  # SwinUNETR v2's residual convolution blocks (use_v2=True)
_BLOCK_KEY = re.compile(r"^stages\.(\d+)\.blocks\.(\d+)\.")
_SSL_HEADS = ("rotation_head.weight", "contrastive_head.weight")  # what SSLHead holds besides the encoder
_TANG_MLP = {".mlp.fc1.": ".mlp.linear1.", ".mlp.fc2.": ".mlp.linear2."}
INDEX = "attn.relative_position_index"
STAGES = 4  # MONAI's SwinTransformer has layers1 to layers4

# Tang et al. pretrained on about 5,000 CTs clipped to [-1000, 1000] HU and scaled to [0, 1]
# (ScaleIntensityRanged in SwinUNETR/Pretrain): the "ct" scheme with that window and (x + 1000) / 2000
TANG_CT_WINDOW = [-1000.0, 1000.0]
TANG_NORMALIZATION = {
    "scheme": "ct",
    "ct_clip": TANG_CT_WINDOW,
    "ct_stats": [TANG_CT_WINDOW[0], TANG_CT_WINDOW[1] - TANG_CT_WINDOW[0]],
    "description": "Tang et al.'s pretraining input: CT in HU clipped to [-1000, 1000] and scaled to [0, 1] "
    "(MONAI's ScaleIntensityRanged), i.e. (clip(x) + 1000) / 2000; resampled to 1.5 x 1.5 x 2.0 mm by "
    "SwinUNETR/Pretrain's defaults",
}
UNKNOWN_NORMALIZATION = {
    "scheme": "zscore",
    "description": "not recorded in a SwinUNETR state dict: the input it was trained on is whatever its "
    "training transforms made (MONAI's BTCV recipes clip CT to [-175, 250] HU and scale it to [0, 1]); "
    "fine-tuning normalizes as the dataset's nnU-Net plans say",
}
TANG = (
    "Tang, Y., Yang, D., Li, W., Roth, H. R., Landman, B., Xu, D., Nath, V., & Hatamizadeh, A. (2022). "
    "Self-supervised pre-training of Swin Transformers for 3D medical image analysis. CVPR 2022, 20730-20740."
)
HATAMIZADEH = (
    "Hatamizadeh, A., Nath, V., Tang, Y., Yang, D., Roth, H. R., & Xu, D. (2022). Swin UNETR: Swin Transformers "
    "for semantic segmentation of brain tumors in MRI images. BrainLes 2021 (arXiv:2201.01266)."
)


@dataclass
class MonaiEncoder:
    """What was read from a MONAI weights file: the encoder's tensors under our names, the
    relative_position_index of each block (MONAI saves it; ours computes it), what else was dropped."""

    foreign: object  # ForeignFile
    prefix: str
    pretraining: bool  # Tang et al.'s self-supervised SwinViT (SSLHead, or their fc1 / fc2 names)
    tensors: dict[str, torch.Tensor]
    indices: dict[str, torch.Tensor]  # MONAI name -> relative_position_index
    dropped: dict[str, int]


# ---------------------------------------------------------------------------------------- reading
def encoder_prefix(state: Mapping[str, torch.Tensor], where: str) -> str:
    """The layout's prefix of the encoder's keys (``ENCODER_PREFIXES``)."""
    for prefix in ENCODER_PREFIXES:
        if f"{prefix}patch_embed.proj.weight" in state:
            return prefix
    sample = ", ".join(sorted(state)[:4])
    raise CheckpointError(
        f"{where} holds no MONAI SwinTransformer: none of 'swinViT.patch_embed.proj.weight', "
        f"'swin_vit.patch_embed.proj.weight' or 'patch_embed.proj.weight' is among its keys (first keys: {sample})."
    )


def in_encoder(name: str, prefix: str) -> bool:
    if prefix:
        return name.startswith(prefix)
    return bool(_BARE_ENCODER_KEY.match(name))


def tang_mlp_renamed(name: str) -> str:
    for theirs, ours in _TANG_MLP.items():
        name = name.replace(theirs, ours)
    return name


def read_monai_encoder(src: Path, where: str) -> MonaiEncoder:
    """The encoder of a MONAI weights file under our names (nothing copied), read without running code."""
    from .foreign_files import read_foreign_file
    from .foreign_layouts import strip_module_prefix

    foreign = read_foreign_file(src)
    state = strip_module_prefix(foreign.state_dict)
    prefix = encoder_prefix(state, where)
    encoder, dropped = {}, Counter()
    for name, value in state.items():
        if in_encoder(name, prefix):
            ours = tang_mlp_renamed(name[len(prefix) :])
            if ours in encoder:  # fc1 beside linear1: one would silently replace the other
                raise CheckpointError(f"{where} holds {name!r} twice, under Tang et al.'s and under MONAI's name.")
            encoder[ours] = value
        else:
            dropped[name.split(".", 1)[0]] += 1
    v2 = sorted(k for k in encoder if _V2_KEY.match(k))
    if v2:
        raise CheckpointError(
            f"{where} holds a SwinUNETR v2 encoder (use_v2=True, e.g. {v2[0]!r}), whose residual convolution "
            "blocks the 3D Swin encoder does not have; only SwinUNETR v1 weights convert."
        )
    tang_names = any(".mlp.fc1." in k for k in state)
    return MonaiEncoder(
        foreign,
        prefix,
        pretraining=tang_names or any(k in state for k in _SSL_HEADS),
        tensors=monai_to_ours(encoder),
        indices={k: v for k, v in encoder.items() if k.endswith(INDEX)},
        dropped=dict(sorted(dropped.items())),
    )


# ----------------------------------------------------------------------------------------- config
def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def windows_of(rows: int, index: torch.Tensor) -> list[tuple[int, int, int]]:
    """The 3D windows whose bias table has ``rows`` rows ((2d-1)(2h-1)(2w-1)) and whose relative position
    index is ``index``: one, or several when a window is 1 along an axis (1x2x2 and 2x1x2 index alike)."""
    n = index.shape[0]
    if index.ndim != 2 or index.shape[1] != n or index.is_floating_point() or n > 32**3:
        return []
    found = []
    for d in _divisors(n):
        for h in _divisors(n // d):
            window = (d, h, n // (d * h))
            if (2 * d - 1) * (2 * h - 1) * (2 * window[2] - 1) != rows:
                continue
            if torch.equal(relative_position_index(window), index.to(torch.long)):
                found.append(window)
    return found


def stage_blocks(tensors: Mapping[str, torch.Tensor], where: str) -> list[int]:
    """The number of blocks of each of the four stages; CheckpointError for missing stages or blocks."""
    blocks: dict[int, set[int]] = {}
    for name in tensors:
        m = _BLOCK_KEY.match(name)
        if m:
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    if sorted(blocks) != list(range(STAGES)):
        found = [f"layers{s + 1}" for s in sorted(blocks)]
        raise CheckpointError(
            f"{where}: its encoder has blocks in {found}, expected MONAI's four stages layers1 to layers4; "
            "the 3D Swin encoder cannot hold these weights."
        )
    for stage, idx in sorted(blocks.items()):
        if sorted(idx) != list(range(len(idx))):
            raise CheckpointError(
                f"{where}: layers{stage + 1} has blocks {sorted(idx)}, not 0 to {len(idx) - 1}; "
                "the 3D Swin encoder cannot hold these weights."
            )
    return [len(blocks[s]) for s in range(STAGES)]


def block_geometry(encoder: MonaiEncoder, stage: int, block: int, fail: Callable) -> tuple[int, tuple, float]:
    """(heads, window, MLP ratio) of one block, read from its shapes and its saved relative_position_index."""
    tensors, dim = encoder.tensors, encoder.tensors["patch_embed.proj.weight"].shape[0] * 2**stage
    ours, theirs = f"stages.{stage}.blocks.{block}.", f"layers{stage + 1}.0.blocks.{block}"
    names = ("attn.relative_position_bias_table", "norm1.weight", "mlp.linear1.weight", INDEX)
    table, norm1, linear1 = (tensors.get(ours + n) for n in names[:3])
    index = encoder.indices.get(f"{theirs}.{INDEX}")
    for name, value in zip(names, (table, norm1, linear1, index)):
        if value is None:  # MONAI saves the index; a bias table's rows alone do not tell the window's sides
            fail(f"block {theirs} lacks {name}")
    if tuple(norm1.shape) != (dim,):
        fail(f"{theirs}.norm1.weight is {list(norm1.shape)}, expected [{dim}] (the embed dim doubled a stage)")
    if table.ndim != 2 or linear1.ndim != 2:
        fail(f"{theirs}'s bias table or linear1 weight is not a matrix")
    fitting = windows_of(table.shape[0], index)
    if len(fitting) != 1:
        what = f"the windows {fitting} alike, which no tensor tells apart" if fitting else "no 3D window"
        fail(f"{theirs}'s bias table ({table.shape[0]} rows) and {INDEX} fit {what}")
    return table.shape[1], fitting[0], linear1.shape[0] / dim


def derive_swin3d_config(encoder: MonaiEncoder, merge_order: str, where: str) -> dict:
    """Swin3dEncoderConfig JSON read from the tensor shapes: in-channels, patch and embed dim from the
    patch embedding, depths from the block numbers, heads, window and MLP ratio from each block
    (``block_geometry``); held to the checkpoint schema. The merge order is given (no tensor holds it)."""
    from nnunetv2_vismae.architectures.swin3d_encoder import Swin3dEncoderConfig

    from .families import SWIN3D, ConfigProblems

    def fail(reason):
        raise CheckpointError(f"{where}: {reason}; the 3D Swin encoder cannot hold these weights.")

    proj = encoder.tensors["patch_embed.proj.weight"]
    if proj.ndim != 5:
        fail(f"'patch_embed.proj.weight' is {list(proj.shape)}, not a 3D convolution's weight")
    embed_dim, in_channels, *patch = proj.shape
    depths = stage_blocks(encoder.tensors, where)
    heads, windows, ratios = [], set(), set()
    for stage, depth in enumerate(depths):
        stage_heads = set()
        for block in range(depth):
            block_heads, window, ratio = block_geometry(encoder, stage, block, fail)
            stage_heads.add(block_heads)
            windows.add(window)
            ratios.add(ratio)
        if len(stage_heads) != 1:
            fail(f"layers{stage + 1} mixes head counts {sorted(stage_heads)}")
        heads.append(stage_heads.pop())
    if len(windows) != 1:
        fail(f"its blocks use different windows {sorted(windows)}")
    if len(ratios) != 1:
        fail(f"its blocks use different MLP ratios {sorted(ratios)}")
    config = Swin3dEncoderConfig(
        in_channels=int(in_channels),
        patch_size=tuple(int(p) for p in patch),
        embed_dim=int(embed_dim),
        depths=tuple(depths),
        num_heads=tuple(int(h) for h in heads),
        window_size=windows.pop(),
        mlp_ratio=float(ratios.pop()),
        normalize_outputs=True,  # what SwinUNETR's decoder reads (normalize=True)
        merge_offsets=merge_order,
    ).to_json()
    try:
        return SWIN3D.validated_config(config)
    except ConfigProblems as e:
        fail(f"its tensors imply an encoder config outside the checkpoint schema: {str(e).rstrip('.')}")


# --------------------------------------------------------------------------------------- metadata
def monai_metadata(src: Path, encoder: MonaiEncoder, config: dict, merge_from: str) -> dict:
    """The checkpoint's metadata: the config, the input the weights expect, who to cite, and a
    ``converted_from`` record of the file and of what the conversion did."""
    from .citations import CITATIONS
    from .conversion import CONVERTER, file_sha256
    from .families import SWIN3D

    if encoder.pretraining:
        source, normalization = "Tang et al.'s self-supervised SwinViT (SwinUNETR/Pretrain)", TANG_NORMALIZATION
        papers = [TANG, HATAMIZADEH]
    else:
        source, normalization, papers = "a MONAI SwinUNETR state dict", UNKNOWN_NORMALIZATION, [HATAMIZADEH]
    return {
        "family": SWIN3D.name,
        "encoder_config": config,
        "normalization": dict(normalization),
        CITATIONS: [{"type": "Pre-training", "name": "SwinUNETR (MONAI)", "apa_citations": papers}],
        "converted_from": {
            "layout": MONAI,
            "source": source,
            "file": src.name,
            "sha256": file_sha256(src),
            "container": encoder.foreign.container,
            "converted_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "converter": CONVERTER,
            "encoder_prefix": encoder.prefix,
            "merge_order": config["merge_offsets"],
            "merge_order_from": merge_from,
            "dropped": encoder.dropped,
            **encoder.foreign.extras,
        },
    }


# ------------------------------------------------------------------------------------- converting
def verify_swin3d_loads_completely(checkpoint, log: Callable[[str], object] = print):
    """Build the 3D Swin encoder from the checkpoint's config and require every tensor to load as is."""
    from nnunetv2_vismae.architectures.swin3d_encoder import Swin3dEncoder, Swin3dEncoderConfig

    from .conversion import require_complete_load
    from .loader import load_encoder_into

    encoder = Swin3dEncoder(Swin3dEncoderConfig.from_json(checkpoint.encoder_config))
    encoder.key_to_encoder = ""  # the encoder is the whole network here
    return require_complete_load(load_encoder_into(encoder, checkpoint, log=log), "Swin3dEncoder")


def convert_monai(
    src: Path,
    dst: Path,
    log: Callable[[str], object] = print,
    license_text: str | None = None,
    cite=(),
    merge_order: str | None = None,
):
    """Convert MONAI SwinUNETR weights ``src`` to a 3D Swin encoder checkpoint at ``dst`` (see module doc);
    CheckpointError, writing nothing, on any problem."""
    from .citations import add_attribution
    from .conversion import write_verified
    from .families import SWIN3D
    from .format import check_tensor_set
    from .nnssl import float32_copies

    if merge_order is not None and merge_order not in MERGE_OFFSETS:
        raise CheckpointError(f"--merge-order {merge_order!r} is not one of {sorted(MERGE_OFFSETS)}.")
    where = f"MONAI weights {src}"
    encoder = read_monai_encoder(src, where)
    merge_from = "--merge-order" if merge_order else "default for weights trained before MONAI 1.5"
    config = derive_swin3d_config(encoder, merge_order or DEFAULT_MERGE_ORDER, where)
    check_tensor_set(SWIN3D, config, encoder.tensors, f"The encoder tensors of {where}")  # before any copy
    metadata = add_attribution(monai_metadata(src, encoder, config, merge_from), license_text, cite, src.name)
    record = metadata["converted_from"]
    groups = ", ".join(f"{k} {n}" for k, n in encoder.dropped.items()) or "nothing"
    log(
        f"Read {src} ({encoder.foreign.container}, {len(encoder.foreign.state_dict)} tensors): {record['source']}, "
        f"encoder under {encoder.prefix or 'the top level'!r}; dropped {groups}."
    )
    norm = metadata["normalization"]
    log(f"Patch merging order {config['merge_offsets']} ({merge_from}); input {norm['scheme']}: {norm['description']}.")
    log(f"Encoder config (from the tensors): {json.dumps(config)}")
    return write_verified(dst, float32_copies(encoder.tensors), metadata, log, verify_swin3d_loads_completely)
