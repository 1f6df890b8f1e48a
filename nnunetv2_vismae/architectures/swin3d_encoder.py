"""A 3D Swin encoder (SwinUNETR's ``SwinViT`` layout) whose windows never shrink.

Parameter names follow MONAI's ``SwinTransformer(spatial_dims=3)`` so that its state dict, and the
public SwinUNETR weights in its layout, map onto this encoder by ``MONAI_RENAMES``: MONAI's
``layers{i+1}.0.`` is our ``stages.{i}.``, everything else keeps its name, and MONAI's persistent
``relative_position_index`` is a non-persistent buffer here (it is computed, not learned).

Why our own code instead of MONAI's module (measured in docs/results/swin3d-encoder.md): MONAI
shrinks a window to the feature map wherever the map is not larger than the window, turns the shift
off there, and then reads the relative position bias of the first n tokens of the full window's
layout, which are not the shrunk window's offsets; so what its weights compute depends on the input
size. Here every block keeps its window at every input size: a feature map that does not fill its
windows is padded with empty tokens (zero after ``norm1``, as MONAI pads where it does not shrink),
and odd blocks always shift by half a window. Where MONAI does not shrink, both compute the same
function (tests/architectures/test_swin3d_encoder.py).

Shapes (input B x in_channels x D x H x W, each axis divisible by ``total_stride``):
    forward: [B x C x D/p x H/p x W/p,  B x 2C x D/2p ...,  ...,  B x 2^n C x D/(2^n p) ...]
    the patch embedding, then each stage's output after its patch merging, as MONAI returns them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from itertools import product

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import nn

# The order in which patch merging concatenates the voxels of each 2x2x2 cell; weights expect the order
# they were trained with. MONAI's default ("merging") up to 1.4 repeats (0, 1, 0) and (0, 0, 1) and never
# reads (1, 1, 0) and (0, 1, 1), which weights trained before 1.5 expect (SwinUNETR's public ones too,
# presumably: the conversion is to check); from 1.5 it reads every voxel once, in another order than its
# "mergingv2", which is row-major.
MERGE_OFFSETS = {
    "monai-1.4": ((0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 0, 1), (0, 1, 0), (0, 0, 1), (1, 1, 1)),
    "monai-1.5": ((0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (1, 0, 1), (0, 1, 1), (1, 1, 1)),
    "row-major": tuple(product(range(2), repeat=3)),
}

# MONAI SwinTransformer state-dict key prefix -> ours (keys without a match keep their name)
MONAI_RENAMES = {f"layers{i + 1}.0.": f"stages.{i}." for i in range(4)}
SHIFT_MASK_VALUE = -100.0  # what Swin and MONAI add between tokens of different regions of a shifted window


def triple(value) -> tuple[int, int, int]:
    values = (value,) * 3 if isinstance(value, int) else tuple(value)
    if len(values) != 3:
        raise ValueError(f"a 3D size needs one value or three, got {value}")
    return tuple(int(v) for v in values)


@dataclass(frozen=True)
class Swin3dEncoderConfig:
    """Plain-JSON description of a 3D Swin encoder (defaults: SwinUNETR's encoder, feature size 48)."""

    in_channels: int = 1
    patch_size: tuple[int, int, int] = (2, 2, 2)
    embed_dim: int = 48
    depths: tuple[int, ...] = (2, 2, 2, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: tuple[int, int, int] = (7, 7, 7)
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.0
    # True: every returned feature map is layer-normed over its channels without parameters, as
    # MONAI's SwinTransformer(normalize=True) returns them to SwinUNETR; False: returned raw
    normalize_outputs: bool = True
    merge_offsets: str = "monai-1.5"  # a key of MERGE_OFFSETS: the order weights were trained with

    def __post_init__(self):
        for name in ("patch_size", "window_size"):
            object.__setattr__(self, name, triple(getattr(self, name)))
        object.__setattr__(self, "depths", tuple(int(d) for d in self.depths))
        object.__setattr__(self, "num_heads", tuple(int(h) for h in self.num_heads))
        if len(self.depths) != len(self.num_heads):
            raise ValueError(f"depths {self.depths} and num_heads {self.num_heads} must have the same number of stages")
        if self.merge_offsets not in MERGE_OFFSETS:
            raise ValueError(f"merge_offsets must be one of {sorted(MERGE_OFFSETS)}, got {self.merge_offsets!r}")

    @property
    def stage_dims(self) -> list[int]:
        """Channels of each returned feature map: the embedding, then each stage after merging."""
        return [self.embed_dim * 2**i for i in range(len(self.depths) + 1)]

    @property
    def total_stride(self) -> tuple[int, int, int]:
        """Input voxels per token of the deepest feature map, per axis (every stage merges)."""
        return tuple(p * 2 ** len(self.depths) for p in self.patch_size)

    def to_json(self) -> dict:
        d = asdict(self)
        for name in ("patch_size", "window_size", "depths", "num_heads"):
            d[name] = list(d[name])
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Swin3dEncoderConfig":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def relative_position_index(window: tuple[int, int, int]) -> torch.Tensor:
    """N x N index into the (2wd-1)(2wh-1)(2ww-1) bias table of the offset between two tokens of a window."""
    coords = torch.stack(torch.meshgrid(*(torch.arange(w) for w in window), indexing="ij")).flatten(1)  # 3 x N
    offsets = coords[:, :, None] - coords[:, None, :]  # 3 x N x N, each in -(w-1)..w-1
    index = torch.zeros(offsets.shape[1:], dtype=torch.long)
    for axis, w in enumerate(window):  # row-major over the table's three offset axes
        index = index * (2 * w - 1) + offsets[axis] + (w - 1)
    return index


def partition(x: torch.Tensor, window: tuple[int, int, int]) -> torch.Tensor:
    """B x D x H x W x C (each a multiple of the window) -> B x windows x N x C, windows in row-major order."""
    b, d, h, w, c = x.shape
    wd, wh, ww = window
    x = x.view(b, d // wd, wd, h // wh, wh, w // ww, ww, c)
    return x.permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(b, -1, wd * wh * ww, c)


def unpartition(windows: torch.Tensor, window: tuple[int, int, int], size: tuple[int, int, int]) -> torch.Tensor:
    """The inverse of ``partition``: B x windows x N x C -> B x D x H x W x C."""
    b, c = windows.shape[0], windows.shape[-1]
    (d, h, w), (wd, wh, ww) = size, window
    x = windows.view(b, d // wd, h // wh, w // ww, wd, wh, ww, c)
    return x.permute(0, 1, 4, 2, 5, 3, 6, 7).reshape(b, d, h, w, c)


def shift_mask(padded: tuple[int, int, int], window, shift, device) -> torch.Tensor:
    """windows x N x N: 0 between tokens of the same region of a shifted window, -100 between others.

    After rolling the padded map back by ``shift``, the last window along an axis holds tokens from
    both ends of the map; regions are [0, P - w), [P - w, P - s), [P - s, P) per axis, as in Swin."""
    labels = torch.zeros(padded, dtype=torch.long, device=device)
    for axis, (p, w, s) in enumerate(zip(padded, window, shift)):
        pos = torch.arange(p, device=device)
        region = (pos >= p - w).long() + ((pos >= p - s).long() if s else 0)
        labels = labels * 3 + region.view([-1 if a == axis else 1 for a in range(3)])
    windows = partition(labels[None, ..., None], window)[0, :, :, 0]  # windows x N
    different = windows[:, :, None] != windows[:, None, :]
    return torch.zeros(different.shape, device=device).masked_fill(different, SHIFT_MASK_VALUE)


class WindowAttention3d(nn.Module):
    """Multi-head self-attention inside each window with a learned bias per relative 3D offset."""

    def __init__(self, dim: int, num_heads: int, window: tuple[int, int, int], attn_drop: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros(torch.Size(2 * w - 1 for w in window).numel(), num_heads)
        )
        self.register_buffer("relative_position_index", relative_position_index(window), persistent=False)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def bias(self) -> torch.Tensor:
        """heads x N x N."""
        n = self.relative_position_index.shape[0]
        return self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1).permute(2, 0, 1)

    def forward(self, qkv: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """qkv: B x windows x N x 3C (projected), mask: None or windows x N x N -> B x windows x N x C (before proj).

        torch's fused attention, with the bias (and the mask) as its additive attn_mask: the same
        softmax(q k^T * scale + bias + mask) v as MONAI, without its B x windows x heads x N x N scores."""
        b, windows, n, _ = qkv.shape
        heads = self.num_heads
        q, k, v = qkv.view(b, windows, n, 3, heads, -1).permute(3, 0, 1, 4, 2, 5).unbind(0)  # B x win x heads x N x d
        bias = self.bias()
        if mask is None:  # one bias for every window: windows in the batch axis, the bias broadcast over them
            q, k, v = (t.reshape(b * windows, heads, n, -1) for t in (q, k, v))
            attn_mask = bias.unsqueeze(0)
        else:  # the mask differs between windows, not between volumes: windows x heads in the head axis
            q, k, v = (t.reshape(b, windows * heads, n, -1) for t in (q, k, v))
            attn_mask = (bias.unsqueeze(0) + mask.unsqueeze(1)).reshape(1, windows * heads, n, n)
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask.to(q.dtype),
            dropout_p=self.attn_drop.p if self.training else 0.0,
            scale=self.scale,
        )
        return out.view(b, windows, heads, n, -1).transpose(2, 3).reshape(b, windows, n, -1)


class Mlp(nn.Module):
    """MONAI's MLPBlock in its "swin" dropout mode, with its parameter names."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.linear1 = nn.Linear(dim, hidden)
        self.linear2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.linear2(self.drop(F.gelu(self.linear1(x)))))


class Swin3dBlock(nn.Module):
    """Pre-norm window attention (shifted by ``shift`` when it is not zero) and MLP, each with a residual."""

    def __init__(self, dim, num_heads, window, shift, mlp_ratio=4.0, drop_path=0.0):
        super().__init__()
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention3d(dim, num_heads, window)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.drop_path(self.windowed_attention(self.norm1(x), mask))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def windowed_attention(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """B x D x H x W x C (normed) -> the same: padded to full windows, rolled, attended, rolled back, cropped."""
        size = x.shape[1:4]
        pad = [(-s) % w for s, w in zip(size, self.window)]
        # a padded token is zero after norm1, so its q, k and v are the qkv bias: project the real
        # tokens only and pad the projection, instead of projecting the padding too
        qkv = F.linear(x, self.attn.qkv.weight)
        qkv = F.pad(qkv, (0, 0, 0, pad[2], 0, pad[1], 0, pad[0])) + self.attn.qkv.bias.to(qkv.dtype)
        padded = qkv.shape[1:4]
        if any(self.shift):  # padded first, then rolled (Swin's and MONAI's order)
            qkv = torch.roll(qkv, shifts=tuple(-s for s in self.shift), dims=(1, 2, 3))
        out = unpartition(self.attn(partition(qkv, self.window), mask), self.window, padded)
        if any(self.shift):
            out = torch.roll(out, shifts=self.shift, dims=(1, 2, 3))
        return self.attn.proj(out[:, : size[0], : size[1], : size[2]])


class PatchMerging3d(nn.Module):
    """Each 2x2x2 cell's voxels concatenated (in ``offsets`` order), normed and projected to twice the channels."""

    def __init__(self, dim: int, offsets: tuple[tuple[int, int, int], ...]):
        super().__init__()
        self.offsets = offsets
        self.norm = nn.LayerNorm(8 * dim)
        self.reduction = nn.Linear(8 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B x D x H x W x C -> B x D/2 x H/2 x W/2 x 2C (an odd axis is padded by one, as MONAI does)."""
        d, h, w = x.shape[1:4]
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2, 0, d % 2))
        x = torch.cat([x[:, i::2, j::2, k::2] for i, j, k in self.offsets], dim=-1)
        return self.reduction(self.norm(x))


class Swin3dStage(nn.Module):
    """Blocks alternating unshifted and shifted windows, then patch merging (MONAI's BasicLayer)."""

    def __init__(self, dim, depth, num_heads, window, mlp_ratio, drop_paths, merge_offsets):
        super().__init__()
        self.window = window
        self.shift = tuple(w // 2 for w in window)
        self.blocks = nn.ModuleList(
            Swin3dBlock(dim, num_heads, window, self.shift if i % 2 else (0, 0, 0), mlp_ratio, drop_paths[i])
            for i in range(depth)
        )
        self.downsample = PatchMerging3d(dim, merge_offsets)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B x D x H x W x C tokens -> B x D/2 x H/2 x W/2 x 2C."""
        mask = None
        if len(self.blocks) > 1 and any(self.shift):  # one mask for every shifted block of the stage
            padded = tuple(-(-s // w) * w for s, w in zip(x.shape[1:4], self.window))
            mask = shift_mask(padded, self.window, self.shift, x.device)
        for block in self.blocks:
            x = block(x, mask if any(block.shift) else None)
        return self.downsample(x)


class Swin3dEncoder(nn.Module):
    """3D Swin encoder returning the patch embedding and every stage's merged output (see the module)."""

    def __init__(self, config: Swin3dEncoderConfig | None = None, **kwargs):
        super().__init__()
        self.config = config = config or Swin3dEncoderConfig(**kwargs)
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv3d(
            config.in_channels, config.embed_dim, kernel_size=config.patch_size, stride=config.patch_size
        )
        # on the CPU even under torch.device("meta"), where the checkpoint format builds it for its shapes
        drop_paths = torch.linspace(0, config.drop_path_rate, sum(config.depths), device="cpu").tolist()
        self.stages = nn.ModuleList()
        for i, (depth, heads) in enumerate(zip(config.depths, config.num_heads)):
            first = sum(config.depths[:i])
            self.stages.append(
                Swin3dStage(
                    config.stage_dims[i],
                    depth,
                    heads,
                    config.window_size,
                    config.mlp_ratio,
                    drop_paths[first : first + depth],
                    MERGE_OFFSETS[config.merge_offsets],
                )
            )

    @property
    def stage_dims(self) -> list[int]:
        return self.config.stage_dims

    def group_matcher(self, coarse: bool = False) -> dict:
        """timm's layer groups (``timm.models.group_parameters``, which layer-wise lr decay reads), as timm's Swin
        forms them: the patch embedding, then one layer per block; a stage's patch merging, which MONAI's layout
        puts after the stage's blocks, goes with its last block (timm's 99999: the group before)."""
        blocks = (
            r"^stages\.(\d+)"
            if coarse
            else [(r"^stages\.(\d+)\.blocks\.(\d+)", None), (r"^stages\.(\d+)\.downsample", (99999,))]
        )
        return {"stem": r"^patch_embed", "blocks": blocks}

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """B x C x D x H x W volume -> B x D/p x H/p x W/p x embed_dim tokens (an axis not divisible by the
        patch is padded at its end, as MONAI does)."""
        pad = [(-s) % p for s, p in zip(x.shape[2:], self.config.patch_size)]
        if any(pad):
            x = F.pad(x, (0, pad[2], 0, pad[1], 0, pad[0]))
        return self.patch_embed.proj(x).permute(0, 2, 3, 4, 1)

    def forward_stages(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        """Channels-last tokens -> [tokens, after stage 1, ...] as B x C x D x H x W, highest resolution first."""
        features = [tokens]
        for stage in self.stages:
            features.append(stage(features[-1]))
        if self.config.normalize_outputs:
            features = [F.layer_norm(f, f.shape[-1:]) for f in features]
        return [f.permute(0, 4, 1, 2, 3) for f in features]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_stages(self.embed(x))


def monai_to_ours(state_dict: dict) -> dict:
    """A MONAI SwinTransformer state dict in our names (the computed relative_position_index left out)."""
    renamed = {}
    for key, value in state_dict.items():
        if key.endswith("relative_position_index"):
            continue
        for theirs, ours in MONAI_RENAMES.items():
            if key.startswith(theirs):
                key = ours + key.removeprefix(theirs)
                break
        renamed[key] = value
    return renamed
