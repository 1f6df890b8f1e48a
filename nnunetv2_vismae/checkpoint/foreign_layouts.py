"""Foreign Swin weight layouts (VIS-MAE / Swin-MAE pretraining files, timm) -> our encoder names.

Our ``SwinEncoder`` *is* timm's ``SwinTransformer``, so the target names are timm's current ones:
``patch_embed.*``, ``layers.{i}.downsample.*`` (patch merging at the START of stage i > 0),
``layers.{i}.blocks.{j}.*`` and ``norm.*``. The foreign layouts differ only in

- where the patch merging lives: the original Swin Transformer, Swin-MAE / VIS-MAE and timm
  before 0.9 put it at the END of stage i (``layers.{i}.downsample``), which is our
  ``layers.{i+1}.downsample``; which one a file uses is read from its key names;
- the order of the four 2x2 neighbours along the merging's 4C axis (probed from timm's
  ``PatchMerging`` at run time and permuted when it differs from the original order);
- what else the file holds (classifier head, MAE decoder, mask token, fixed position embedding,
  non-persistent buffers), which is dropped and reported;
- the number of input channels of the stem (RGB), folded to what the user asks for.

Everything here works on in-memory state dicts: ``foreign_files.py`` reads them from the files,
``convert.py`` writes the checkpoint and is the command.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Mapping, Optional

import torch

from .adapt import window_of_table
from .errors import CheckpointError

LAYOUTS = ("vismae", "timm")
# SwinEncoderConfig.shift_single_window_stages of each layout: the original Swin-MAE / VIS-MAE
# blocks shift every odd block, even where a stage fits in one window (7x7 at 224); timm and the
# original Swin Transformer do not shift there. Weights compute what they were trained to only
# under their own rule.
SHIFTS_SINGLE_WINDOW_STAGES = {"vismae": True, "timm": False}

# The original Swin Transformer (and Swin-MAE / VIS-MAE) concatenates the 2x2 neighbours as
# x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2]: (row parity, column parity) pairs.
ORIGINAL_MERGE_ORDER = ((0, 0), (1, 0), (0, 1), (1, 1))

# Top-level names of the tensors that belong to the encoder.
_ENCODER_ROOTS = ("patch_embed", "layers", "norm")
# Non-persistent buffers that older code saved; recomputed by the model, never weights.
_BUFFER_SUFFIXES = ("relative_position_index", "attn_mask")
# Parts of a VIS-MAE / Swin-MAE pretraining model that are not the encoder.
_MAE_ONLY_ROOTS = ("mask_token", "pos_embed", "first_patch_expanding", "layers_up", "norm_up", "decoder_pred")
_TIMM_ONLY_ROOTS = ("head",)

_STAGE_KEY = re.compile(r"^layers\.(\d+)\.(.*)$")
_BLOCK_KEY = re.compile(r"^layers\.(\d+)\.blocks\.(\d+)\.(.*)$")
_MONAI_BLOCK_KEY = re.compile(r"(^|\.)layers\d+\.0\.blocks\.")  # MONAI's SwinTransformer (SwinUNETR)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ---------------------------------------------------------------------------- layout detection
def _root(name: str) -> str:
    return name.split(".", 1)[0]


def strip_module_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove a ``module.`` prefix (DistributedDataParallel) present on every key."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module.") :]: v for k, v in state.items()}
    return dict(state)


def detect_layout(state: Mapping[str, torch.Tensor], where: str = "The input") -> str:
    """'vismae' when MAE-only parts are present, 'timm' for a bare Swin; else CheckpointError."""
    roots = {_root(k) for k in state}
    if "patch_embed.proj.weight" not in state or not any(_BLOCK_KEY.match(k) for k in state):
        sample = ", ".join(sorted(state)[:4])
        monai = any(_MONAI_BLOCK_KEY.search(k) for k in state)
        raise CheckpointError(
            f"{where} is not a Swin Transformer state dict: it lacks "
            f"'patch_embed.proj.weight' or 'layers.N.blocks.M.*' (first keys: "
            f"{sample})"
            + ("; it holds MONAI's 3D Swin (layersN.0.blocks), convert it with --from monai." if monai else ".")
        )
    if roots & set(_MAE_ONLY_ROOTS):
        return "vismae"
    return "timm"


def downsample_position(state: Mapping[str, torch.Tensor]) -> str:
    """'end' when the patch merging sits at the end of stages (``layers.0.downsample`` exists:
    original Swin, VIS-MAE, timm < 0.9), else 'start' (current timm, our encoder)."""
    return "end" if any(k.startswith("layers.0.downsample.") for k in state) else "start"


# ------------------------------------------------------------------------------- patch merging
def timm_merge_order() -> tuple[tuple[int, int], ...]:
    """(row parity, column parity) of each 4C slot of timm's ``PatchMerging``, read by running
    it on a 2x2 map whose one channel encodes each position."""
    from timm.models.swin_transformer import PatchMerging

    merge = PatchMerging(dim=1)
    merge.norm, merge.reduction = torch.nn.Identity(), torch.nn.Identity()
    grid = torch.tensor([[0.0, 1.0], [2.0, 3.0]]).view(1, 2, 2, 1)  # value = 2 * row + col
    with torch.no_grad():
        codes = merge(grid).flatten().tolist()
    return tuple((int(c) // 2, int(c) % 2) for c in codes)


def merge_permutation(source_order, target_order) -> Optional[list[int]]:
    """Slot permutation p with ``target[k] = source[p[k]]``, or None when the orders agree."""
    if tuple(source_order) == tuple(target_order):
        return None
    return [list(source_order).index(pos) for pos in target_order]


def permute_merge_axis(t: torch.Tensor, perm: list[int], dim: int) -> torch.Tensor:
    """Reorder the four C-sized slots of the 4C axis ``dim`` by ``perm``."""
    c = t.shape[dim] // 4
    index = torch.cat([torch.arange(p * c, (p + 1) * c) for p in perm])
    return t.index_select(dim, index)


# ------------------------------------------------------------------------------------ mapping
@dataclass
class MappedWeights:
    """The source's encoder tensors under our names, as read (neither copied nor permuted, so that
    their shapes are checked before any copy: ``float32_copies``), plus what was dropped."""

    tensors: dict[str, torch.Tensor]
    layout: str
    downsample: str  # "start" or "end" in the source
    dropped: dict[str, int] = field(default_factory=dict)  # group -> tensor count
    merge_permutation: Optional[list[int]] = None  # of the patch merging's 4C axis; None: same order

    @property
    def merge_permuted(self) -> bool:
        return self.merge_permutation is not None


def _drop_group(name: str) -> str:
    last = name.rsplit(".", 1)[-1]
    if last in _BUFFER_SUFFIXES:
        return f"{last} (buffers)"
    return _root(name)


def map_to_encoder_names(state: Mapping[str, torch.Tensor], layout: str, where: str = "The input") -> MappedWeights:
    """Rename a foreign Swin state dict to our encoder's names, dropping what is not the encoder
    (nothing is copied); unknown non-encoder tensors of a timm file are refused (they could change
    what the network computes, e.g. ``absolute_pos_embed``)."""
    if layout not in LAYOUTS:
        raise CheckpointError(f"Unknown source layout {layout!r}, expected one of {LAYOUTS}.")
    position = downsample_position(state)
    allowed_drops = set(_MAE_ONLY_ROOTS if layout == "vismae" else _TIMM_ONLY_ROOTS)
    dropped: Counter = Counter()
    encoder: dict[str, torch.Tensor] = {}
    refused = []
    for name, value in state.items():
        root = _root(name)
        if name.rsplit(".", 1)[-1] in _BUFFER_SUFFIXES:
            dropped[_drop_group(name)] += 1
            continue
        if root not in _ENCODER_ROOTS:
            if root in allowed_drops or layout == "vismae":  # the whole MAE decoder side goes
                dropped[_drop_group(name)] += 1
            else:
                refused.append(name)
            continue
        encoder[name] = value
    if refused:
        hint = (
            " (it looks like a VIS-MAE pretraining file; use --from vismae or auto)"
            if any(_root(n) in _MAE_ONLY_ROOTS for n in refused)
            else ""
        )
        raise CheckpointError(
            f"{where} holds {len(refused)} tensors outside the Swin encoder that "
            f"a timm Swin does not have (e.g. {refused[0]!r}); the encoder "
            f"cannot reproduce them{hint}."
        )

    if position == "end":
        stages = {int(m.group(1)) for m in map(_STAGE_KEY.match, encoder) if m}
        last = max(stages)
        moved = {}
        for name, value in encoder.items():
            m = _STAGE_KEY.match(name)
            if m and m.group(2).startswith("downsample."):
                stage = int(m.group(1))
                if stage == last:
                    raise CheckpointError(
                        f"{where} has a patch merging after its last stage ({name!r}); the encoder has no place for it."
                    )
                name = f"layers.{stage + 1}.{m.group(2)}"
            moved[name] = value
        encoder = moved

    source_order = ORIGINAL_MERGE_ORDER if position == "end" else None
    perm = merge_permutation(source_order, timm_merge_order()) if source_order else None
    return MappedWeights(encoder, layout, position, dict(sorted(dropped.items())), perm)


def float32_copies(mapped: MappedWeights) -> dict[str, torch.Tensor]:
    """Contiguous float32 CPU copies of the mapped tensors, patch merging in the target's neighbour
    order. Only for tensors whose shapes were checked: an expanded view is copied in full."""
    perm = mapped.merge_permutation
    out = {}
    for name, value in mapped.tensors.items():
        value = value.detach().to("cpu", torch.float32, copy=True)
        if perm is not None and ".downsample." in name:
            if name.endswith(("downsample.norm.weight", "downsample.norm.bias")):
                value = permute_merge_axis(value, perm, 0)
            elif name.endswith("downsample.reduction.weight"):
                value = permute_merge_axis(value, perm, 1)
        out[name] = value.contiguous()
    return out


# ------------------------------------------------------------------------------ config derivation
def derive_swin_config(tensors: Mapping[str, torch.Tensor], where: str = "The input") -> dict:
    """SwinEncoderConfig JSON read from tensor shapes (our names): embed dim and in-channels and
    patch size from ``patch_embed.proj.weight``, depths from the block indices, heads from each
    relative position table's columns, window from its rows ((2w-1)^2), mlp ratio from fc1, and
    the final norm from ``norm.*`` (timm has one; the original VIS-MAE / Swin-MAE encoder has none)."""

    def fail(reason):
        raise CheckpointError(f"{where}: {reason}; SwinEncoder cannot hold these weights.")

    proj = tensors.get("patch_embed.proj.weight")
    if proj is None or proj.ndim != 4:
        fail("'patch_embed.proj.weight' is missing or not a 4-D conv weight")
    embed_dim, in_chans, kh, kw = proj.shape
    if kh != kw:
        fail(f"the patch embedding kernel is {kh}x{kw}, not square")

    blocks: dict[int, set[int]] = {}
    for name in tensors:
        m = _BLOCK_KEY.match(name)
        if m:
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    if sorted(blocks) != list(range(len(blocks))):
        fail(f"its stages are numbered {sorted(blocks)}, not 0..{len(blocks) - 1}")
    depths, heads, windows, ratios = [], [], set(), set()
    for stage in range(len(blocks)):
        idx = sorted(blocks[stage])
        if idx != list(range(len(idx))):
            fail(f"stage {stage} has blocks {idx}, not 0..{len(idx) - 1}")
        depths.append(len(idx))
        dim = embed_dim * 2**stage
        stage_heads = set()
        for j in idx:
            prefix = f"layers.{stage}.blocks.{j}."
            table = tensors.get(prefix + "attn.relative_position_bias_table")
            qkv = tensors.get(prefix + "attn.qkv.weight")
            fc1 = tensors.get(prefix + "mlp.fc1.weight")
            norm1 = tensors.get(prefix + "norm1.weight")
            if table is None or qkv is None or fc1 is None or norm1 is None:
                fail(
                    f"block {prefix.rstrip('.')} lacks its attention table, qkv, mlp or norm "
                    "weights (is it a Swin v1 checkpoint?)"
                )
            if norm1.shape[0] != dim:
                fail(
                    f"stage {stage} has width {norm1.shape[0]}, expected {dim} (embed dim "
                    f"{embed_dim} doubled per stage)"
                )
            window = window_of_table(table.shape[0])
            if window is None:
                fail(
                    f"{prefix}attn.relative_position_bias_table has {table.shape[0]} rows, not "
                    "(2w-1)^2 for a square window w"
                )
            windows.add(window)
            stage_heads.add(table.shape[1])
            if tuple(qkv.shape) != (3 * dim, dim):
                fail(
                    f"{prefix}attn.qkv.weight is {list(qkv.shape)}, expected {[3 * dim, dim]} "
                    "(head dim = width / heads)"
                )
            ratios.add(fc1.shape[0] / dim)
        if len(stage_heads) != 1:
            fail(f"stage {stage} mixes head counts {sorted(stage_heads)}")
        h = stage_heads.pop()
        if dim % h:
            fail(f"stage {stage} has {h} heads, which do not divide its width {dim}")
        heads.append(h)
    if len(windows) != 1:
        fail(f"its stages use different window sizes {sorted(windows)}")
    if len(ratios) != 1:
        fail(f"its blocks use different mlp ratios {sorted(ratios)}")
    from nnunetv2_vismae.architectures.swin_encoder import SwinEncoderConfig

    from .families import SWIN, ConfigProblems

    config = SwinEncoderConfig(
        in_channels=int(in_chans),
        patch_size=int(kh),
        embed_dim=int(embed_dim),
        depths=tuple(depths),
        num_heads=tuple(heads),
        window_size=windows.pop(),
        mlp_ratio=float(ratios.pop()),
        final_norm="norm.weight" in tensors or "norm.bias" in tensors,
    ).to_json()
    try:  # the bounds every checkpoint is held to, before a model is built from it
        return SWIN.validated_config(config)
    except ConfigProblems as e:
        fail(f"its tensors imply an encoder config outside the checkpoint schema: {str(e).rstrip('.')}")


# --------------------------------------------------------------------------------- in-channels
def fold_input_channels(weight: torch.Tensor, channels: int) -> torch.Tensor:
    """Stem conv weight (out x C x k x k) -> (out x channels x k x k): summed over C (a
    grayscale image copied into C channels gives the same response on one channel), then for
    ``channels`` > 1 repeated and divided by ``channels`` (same response to a repeated image)."""
    folded = weight.sum(dim=1, keepdim=True)
    if channels == 1:
        return folded
    return (folded / channels).repeat(1, channels, 1, 1).contiguous()


def imagenet_normalization(layout: str, source_channels: int, channels: int) -> dict:
    """The ``normalization`` metadata of converted weights: the input they expect."""
    common = {
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "intensity_range": [0, 1],
        "source_in_channels": source_channels,
        "in_channels": channels,
    }
    origin = (
        "VIS-MAE pretrained on grayscale images scaled to [0, 1], copied into 3 channels and "
        "normalized per channel with the ImageNet mean/std"
        if layout == "vismae"
        else "timm Swin weights expect RGB in [0, 1] normalized per channel with the ImageNet "
        "mean/std (timm's default for Swin)"
    )
    if channels == source_channels:
        return {"scheme": "imagenet_rgb", **common, "description": origin + "; the stem is unchanged."}
    mean = sum(IMAGENET_MEAN) / len(IMAGENET_MEAN)
    std = sum(IMAGENET_STD) / len(IMAGENET_STD)
    return {
        "scheme": "imagenet_rgb_folded",
        **common,
        "folded_mean": round(mean, 4),
        "folded_std": round(std, 4),
        "description": origin + f"; the stem was summed over its {source_channels} input "
        f"channels (then repeated / {channels}), which is exact for equal "
        f"channels, so each input channel expects grayscale in [0, 1] "
        f"normalized as (x - {mean:.4f}) / {std:.4f} (the channel average).",
    }
