"""The VIS-MAE Swin encoder, shared by pretraining and fine-tuning.

Built on timm's ``SwinTransformer`` so that its parameter names are timm's own
(``patch_embed.*``, ``layers.{i}.downsample.*``, ``layers.{i}.blocks.{j}.*``, ``norm.*``):
what the MAE pretrains is exactly what ``SwinUNet`` fine-tunes, and timm checkpoints map 1:1.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from timm.models.swin_transformer import SwinTransformer
from torch import nn

from nnunetv2_vismae.architectures.swin_block import use_swin_blocks


@dataclass(frozen=True)
class SwinEncoderConfig:
    """Plain-JSON description of a Swin encoder; recorded in plans and checkpoints."""

    in_channels: int = 1
    patch_size: int = 4
    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 2, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 7
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.1
    # True: odd blocks shift also in stages that fit in one window at the nominal size (the last
    # one), as the original Swin-MAE / VIS-MAE code does; False: they do not, as timm and Swin do
    shift_single_window_stages: bool = False
    # True: the last stage's output is layer-normed (timm's ``norm``, our own pretraining); False: it
    # is returned raw, as the original Swin-MAE / VIS-MAE encoder returns it (it has no final norm)
    final_norm: bool = True

    def __post_init__(self):
        object.__setattr__(self, "depths", tuple(int(d) for d in self.depths))
        object.__setattr__(self, "num_heads", tuple(int(h) for h in self.num_heads))
        if len(self.depths) != len(self.num_heads):
            raise ValueError(
                f"Swin encoder depths {self.depths} and num_heads {self.num_heads} must have the same number of stages."
            )

    @property
    def stage_dims(self) -> list[int]:
        return [self.embed_dim * 2**i for i in range(len(self.depths))]

    @property
    def total_stride(self) -> int:
        """Input pixels per token of the deepest stage, per axis."""
        return self.patch_size * 2 ** (len(self.depths) - 1)

    def to_json(self) -> dict:
        d = asdict(self)
        d["depths"], d["num_heads"] = list(self.depths), list(self.num_heads)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "SwinEncoderConfig":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class SwinEncoder(SwinTransformer):
    """Swin-Transformer encoder returning the feature maps of its stages.

    The stages are laid out for a nominal input of ``window_size * total_stride`` pixels (224 for
    the defaults), where every stage is at least one window wide: windows keep ``window_size`` at
    every input size (smaller feature maps are padded), so the relative position tables have one
    shape and weights move freely between patch sizes. Odd blocks shift their windows by half a
    window. A stage that fits in one window at the nominal size (the last) does not shift, as in
    timm and the Swin paper, unless ``shift_single_window_stages`` (timm's ``always_partition``),
    as the original Swin-MAE / VIS-MAE code does: either way, pretrained weights compute exactly
    what they computed at 224 when the rule is theirs. Without ``final_norm`` the encoder has no
    ``norm`` and returns its last stage raw, as the original Swin-MAE / VIS-MAE encoder does.

    Shapes (defaults, input B x in_channels x H x W, H and W divisible by ``total_stride``):
        embed:          B x H/4 x W/4 x 96 (NHWC tokens)
        forward_stages: [B x 96 x H/4 x W/4, B x 192 x H/8, B x 384 x H/16, B x 768 x H/32]
    """

    def __init__(
        self,
        in_channels: int = 1,
        patch_size: int = 4,
        embed_dim: int = 96,
        depths=(2, 2, 2, 2),
        num_heads=(3, 6, 12, 24),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.1,
        shift_single_window_stages: bool = False,
        final_norm: bool = True,
    ):
        self.config = SwinEncoderConfig(
            in_channels,
            patch_size,
            embed_dim,
            depths,
            num_heads,
            window_size,
            mlp_ratio,
            drop_path_rate,
            shift_single_window_stages,
            final_norm,
        )
        super().__init__(
            img_size=window_size * self.config.total_stride,
            patch_size=patch_size,
            in_chans=in_channels,
            num_classes=0,
            global_pool="",
            embed_dim=embed_dim,
            depths=tuple(depths),
            num_heads=tuple(num_heads),
            window_size=window_size,
            mlp_ratio=mlp_ratio,
            drop_path_rate=drop_path_rate,
            always_partition=shift_single_window_stages,
            strict_img_size=False,
        )
        del self.head  # a classifier head is not part of the encoder contract
        if not final_norm:
            self.norm = nn.Identity()  # no parameters: the state dict has no norm.* either
        use_swin_blocks(self)

    @classmethod
    def from_config(cls, config: SwinEncoderConfig) -> "SwinEncoder":
        return cls(
            config.in_channels,
            config.patch_size,
            config.embed_dim,
            config.depths,
            config.num_heads,
            config.window_size,
            config.mlp_ratio,
            config.drop_path_rate,
            config.shift_single_window_stages,
            config.final_norm,
        )

    @property
    def stage_dims(self) -> list[int]:
        return self.config.stage_dims

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """B x C x H x W image -> B x H/p x W/p x D tokens (normalized patch embedding)."""
        return self.patch_embed(x)

    def forward_stages(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        """NHWC tokens -> list of NCHW stage outputs, highest resolution first; last one normed
        (with ``final_norm``)."""
        features = []
        for i, stage in enumerate(self.layers):
            tokens = stage(tokens)
            out = self.norm(tokens) if i == len(self.layers) - 1 else tokens
            features.append(out.permute(0, 3, 1, 2))
        return features

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_stages(self.embed(x))
