"""The ``swin`` family: VIS-MAE, a masked autoencoder around the shared ``SwinEncoder``.

Swin attends within windows over the full token grid, so masked patches cannot be dropped as in
ViT-MAE: after patch embedding they are replaced by a learned mask token (VIS-MAE, SimMIM). The
mask hides blocks of ``mask_block`` x ``mask_block`` patches (16 x 16 pixels by default).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from torch import nn

from nnunetv2_vismae.architectures.decoders import PatchExpand
from nnunetv2_vismae.architectures.swin_block import decoder_stage
from nnunetv2_vismae.architectures.swin_encoder import SwinEncoder, SwinEncoderConfig
from nnunetv2_vismae.architectures.swin_unet import SWIN_DECODER
from nnunetv2_vismae.flags import positive_int
from pretrain.errors import PretrainUserError
from pretrain.families.base import FamilyOptions, MAEModel, PretrainingFamily
from pretrain.masking import window_mask

SWIN_MAE_DECODER, LIGHT_DECODER = "swin", "light"  # reconstruction decoders (not encoder families)
DECODERS = (SWIN_MAE_DECODER, LIGHT_DECODER)


# ------------------------------------------------------------------------------------- model
class SwinMAEDecoder(nn.Module):
    """VIS-MAE decoder: patch expanding + Swin blocks from the deepest stage up to patch resolution.

    No skip connections (they would hand the encoder's unmasked early features to the decoder).
    Input B x D_last x H/s x W/s (s = total stride); output B x (H/p * W/p) x (p * p * C).
    """

    def __init__(
        self, stage_dims: list[int], num_heads, window_size: int, depth: int, patch_size: int, out_channels: int
    ):
        super().__init__()
        n = len(stage_dims)
        self.expands = nn.ModuleList(PatchExpand(stage_dims[i + 1], stage_dims[i]) for i in reversed(range(n - 1)))
        self.stages = nn.ModuleList(
            decoder_stage(stage_dims[i], depth, num_heads[i], window_size) for i in reversed(range(n - 1))
        )
        self.norm = nn.LayerNorm(stage_dims[0])
        self.pred = nn.Linear(stage_dims[0], patch_size * patch_size * out_channels)

    def forward(self, deepest: torch.Tensor) -> torch.Tensor:
        x = deepest.permute(0, 2, 3, 1)  # B x h' x w' x D_last
        for expand, stage in zip(self.expands, self.stages):
            x = stage(expand(x))  # x2 resolution, /2 channels
        x = self.pred(self.norm(x))  # B x h x w x p*p*C
        return x.flatten(1, 2)


class LightMAEDecoder(nn.Module):
    """A cheap head: 1x1 conv + pixel shuffle from the deepest stage to patch resolution, one 3x3 conv,
    then a per-patch linear (1x1 conv) prediction. Output B x (H/p * W/p) x (p * p * C)."""

    def __init__(self, in_dim: int, upscale: int, patch_size: int, out_channels: int, dim: int = 32):
        super().__init__()
        self.upscale = upscale
        self.expand = nn.Conv2d(in_dim, dim * upscale * upscale, 1)
        self.refine = nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1), nn.GELU())
        self.pred = nn.Conv2d(dim, patch_size * patch_size * out_channels, 1)

    def forward(self, deepest: torch.Tensor) -> torch.Tensor:
        x = F.pixel_shuffle(self.expand(deepest), self.upscale)  # B x dim x h x w
        x = self.pred(self.refine(x))  # B x p*p*C x h x w
        return x.flatten(2).transpose(1, 2)


class SwinMAE(MAEModel):
    """Masked autoencoder with the shared Swin encoder.

    Shapes (patch p, image B x C x H x W, grid h = H/p, w = W/p, L = h * w):
        mask:  B x h x w bool, True = hidden
        pred:  B x L x (p * p * C), pixels of every patch (the loss uses the hidden ones)
    """

    def __init__(
        self,
        config: SwinEncoderConfig,
        decoder: str = SWIN_MAE_DECODER,
        decoder_depth: int = 1,
        norm_pix_loss: bool = False,
    ):
        super().__init__()
        self.config, self.norm_pix_loss = config, norm_pix_loss
        self.patch_size = config.patch_size
        self.encoder = SwinEncoder.from_config(config)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, 1, config.embed_dim))
        trunc_normal_(self.mask_token, std=0.02)
        c = config.in_channels
        if decoder == SWIN_MAE_DECODER:
            self.decoder = SwinMAEDecoder(
                config.stage_dims, config.num_heads, config.window_size, decoder_depth, config.patch_size, c
            )
        elif decoder == "light":
            self.decoder = LightMAEDecoder(
                config.stage_dims[-1], config.total_stride // config.patch_size, config.patch_size, c
            )
        else:
            raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")

    # Pixel rearrangements by permute, which autocast leaves alone: einsum is on CUDA's autocast list and
    # would round the loss target to bf16 there (not on CPU, so only a GPU would show it).
    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """B x C x H x W -> B x L x (p * p * C), in the dtype of ``imgs``."""
        b, c, h, w = imgs.shape
        p = self.patch_size
        x = imgs.reshape(b, c, h // p, p, w // p, p)
        return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // p) * (w // p), p * p * c)

    def unpatchify(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """B x L x (p * p * C) -> B x C x H x W, for a patch grid ``grid`` = (h, w)."""
        b, p, (h, w) = x.shape[0], self.patch_size, grid
        c = x.shape[-1] // (p * p)
        x = x.reshape(b, h, w, p, p, c)
        return x.permute(0, 5, 1, 3, 2, 4).reshape(b, c, h * p, w * p)

    def loss_target(self, imgs: torch.Tensor) -> torch.Tensor:
        """What the prediction regresses: the fp32 pixels of every patch, per-patch normalized with
        ``norm_pix_loss``; B x L x (p * p * C)."""
        target = self.patchify(imgs.float())
        if self.norm_pix_loss:
            mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5
        return target

    def forward_encoder(self, imgs: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        """Embed, replace hidden patches by the mask token, run the stages -> list of NCHW features."""
        tokens = self.encoder.embed(imgs)  # B x h x w x D
        tokens = torch.where(mask.unsqueeze(-1), self.mask_token.to(tokens.dtype), tokens)
        return self.encoder.forward_stages(tokens)

    def forward_decoder(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Deepest stage features -> B x L x (p * p * C)."""
        return self.decoder(features[-1])

    def forward_loss(self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean squared error over the pixels of hidden patches only (fp32)."""
        per_patch = ((pred.float() - self.loss_target(imgs)) ** 2).mean(dim=-1)  # B x L
        hidden = mask.flatten(1).float()
        return (per_patch * hidden).sum() / hidden.sum()

    def forward(self, imgs: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pred = self.forward_decoder(self.forward_encoder(imgs, mask))
        return self.forward_loss(imgs, pred, mask), pred

    @torch.no_grad()
    def reconstruct(self, imgs, mask, pred):
        grid = mask.shape[1:]
        pred = pred.float()
        if self.norm_pix_loss:  # back to pixel space with the true patch statistics
            target = self.patchify(imgs.float())
            pred = pred * (target.var(-1, keepdim=True) + 1e-6) ** 0.5 + target.mean(-1, keepdim=True)
        p = self.patch_size
        pixel_mask = mask.repeat_interleave(p, 1).repeat_interleave(p, 2).unsqueeze(1)  # B x 1 x H x W
        recon = torch.where(pixel_mask, self.unpatchify(pred, grid), imgs.float())
        return recon, pixel_mask


# ------------------------------------------------------------------------ command-line plug-in
def one_side(values: list[int] | None, flag: str, default: int) -> int:
    """A shared per-axis flag as the 2D family takes it: one side (the family's ``default`` when unset)."""
    if values is None:
        return default
    if len(values) != 1:
        raise PretrainUserError(f"{flag} takes one side for the 2D swin family, got {len(values)} values.")
    return values[0]


@dataclass(frozen=True)
class SwinOptions(FamilyOptions):
    """The swin family's flags (``--mask-ratio`` is shared with the cnn family; the encoder and mask flags with
    the swin3d family, which fills its own defaults where they are left unset)."""

    embed_dim: int
    depths: list[int]
    heads: list[int]
    window: int
    encoder_patch: int
    drop_path: float
    decoder: str
    decoder_depth: int
    mask_ratio: float
    mask_block: int
    norm_pix_loss: bool

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("swin family (VIS-MAE) and swin3d family (VIS-MAE on volumes)")
        g.add_argument(
            "--embed-dim", type=positive_int, help="Swin embedding dimension (default 96; swin3d 48, SwinUNETR's)."
        )
        g.add_argument(
            "--depths",
            type=positive_int,
            nargs="+",
            default=[2, 2, 2, 2],
            help="Swin blocks per stage; must equal the fine-tuning encoder's (default 2 2 2 2).",
        )
        g.add_argument(
            "--heads",
            type=positive_int,
            nargs="+",
            default=[3, 6, 12, 24],
            help="attention heads per stage (default 3 6 12 24).",
        )
        g.add_argument(
            "--window",
            type=positive_int,
            nargs="+",
            default=[7],
            help="attention window size in tokens; swin3d: one side or one per axis Z Y X (default 7).",
        )
        g.add_argument(
            "--encoder-patch",
            type=positive_int,
            nargs="+",
            help="pixels per patch token; swin3d: voxels, one side or one per axis Z Y X (default 4; swin3d 2).",
        )
        g.add_argument("--drop-path", type=float, default=0.1, help="stochastic depth rate (default 0.1).")
        g.add_argument(
            "--decoder",
            choices=DECODERS,
            default=SWIN_MAE_DECODER,
            help="reconstruction decoder of the 2D swin family: 'swin' (VIS-MAE: patch expanding + Swin blocks) or "
            "'light' (small conv head, cheaper); it is not part of the checkpoint (default swin).",
        )
        g.add_argument(
            "--decoder-depth", type=positive_int, default=1, help="Swin blocks per decoder stage (default 1)."
        )
        g.add_argument("--mask-ratio", type=float, default=0.75, help="fraction of blocks hidden (default 0.75).")
        g.add_argument(
            "--mask-block",
            type=positive_int,
            nargs="+",
            help="mask block side in patches: 4 = 16x16 pixels at patch 4 (default 4); swin3d: one side or one per "
            "axis Z Y X (default half a cell of the deepest stage: 8 patches = 16 voxels with four stages).",
        )
        g.add_argument(
            "--norm-pix-loss", action="store_true", help="regress per-patch normalized pixels (MAE's norm_pix_loss)."
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "SwinOptions":
        return cls(
            embed_dim=96 if args.embed_dim is None else args.embed_dim,
            depths=args.depths,
            heads=args.heads,
            window=one_side(args.window, "--window", 7),
            encoder_patch=one_side(args.encoder_patch, "--encoder-patch", 4),
            drop_path=args.drop_path,
            decoder=args.decoder,
            decoder_depth=args.decoder_depth,
            mask_ratio=args.mask_ratio,
            mask_block=one_side(args.mask_block, "--mask-block", 4),
            norm_pix_loss=args.norm_pix_loss,
        )


# ------------------------------------------------------------------------------------ family
class SwinFamily(PretrainingFamily):
    name = "swin"
    options_type = SwinOptions
    options: SwinOptions

    def __init__(self, options: SwinOptions, in_channels: int):
        super().__init__(options, in_channels)
        o = options
        try:
            self.encoder_config = SwinEncoderConfig(
                in_channels, o.encoder_patch, o.embed_dim, o.depths, o.heads, o.window, drop_path_rate=o.drop_path
            )
        except ValueError as e:
            raise PretrainUserError(str(e)) from None
        self.mask_settings = {
            "type": "window",
            "ratio": o.mask_ratio,
            "block_patches": o.mask_block,
            "block_pixels": o.mask_block * o.encoder_patch,
            "replaced_by": "mask_token",
        }

    def validate(self, patch_size: int) -> None:
        cfg, o = self.encoder_config, self.options
        if not 0 < o.mask_ratio < 1:
            raise PretrainUserError(f"--mask-ratio must be between 0 and 1, got {o.mask_ratio}.")
        for i, (dim, heads) in enumerate(zip(cfg.stage_dims, cfg.num_heads)):
            if dim % heads:
                raise PretrainUserError(f"Stage {i} has dimension {dim}, which --heads {heads} does not divide.")
        if patch_size % cfg.total_stride:
            raise PretrainUserError(
                f"--patch-size {patch_size} must be a multiple of the encoder's total stride "
                f"{cfg.total_stride} (encoder patch x 2^(stages-1))."
            )
        if (patch_size // cfg.patch_size) % o.mask_block:
            raise PretrainUserError(
                f"--patch-size {patch_size} must be a multiple of the mask block "
                f"({o.mask_block} patches = {o.mask_block * cfg.patch_size} pixels)."
            )
        blocks = (patch_size // cfg.patch_size // o.mask_block) ** 2
        if not 0 < round(o.mask_ratio * blocks) < blocks:
            raise PretrainUserError(
                f"--mask-ratio {o.mask_ratio} must hide at least one and keep at least one "
                f"of the {blocks} mask blocks of a patch."
            )

    def build_model(self) -> SwinMAE:
        return SwinMAE(
            self.encoder_config, self.options.decoder, self.options.decoder_depth, self.options.norm_pix_loss
        )

    def make_mask(self, imgs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        p = self.encoder_config.patch_size
        return window_mask(
            imgs.shape[0],
            (imgs.shape[2] // p, imgs.shape[3] // p),
            self.options.mask_block,
            self.options.mask_ratio,
            imgs.device,
            generator,
        )

    def stage_channels(self, model: SwinMAE) -> list[int]:
        return list(model.encoder.stage_dims)

    def encoder_tensors(self, model: SwinMAE) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().contiguous() for k, v in model.encoder.state_dict().items()}

    def settings(self) -> dict:
        o = self.options
        return {
            "family": self.name,
            "encoder_config": self.encoder_config.to_json(),
            "decoder": o.decoder,
            "decoder_depth": o.decoder_depth,
            "norm_pix_loss": o.norm_pix_loss,
            "mask": self.mask_settings,
        }

    def checkpoint_metadata(self) -> dict:
        return {
            "family": self.name,
            "encoder_config": self.encoder_config.to_json(),
            "mask": self.mask_settings,
            "pretraining_decoder": self.options.decoder,
            "norm_pix_loss": self.options.norm_pix_loss,
        }

    def check_fine_tunable(self, model: SwinMAE, workdir: str, metadata: dict | None = None) -> None:
        from nnunetv2_vismae.architectures.swin_unet import SwinUNet

        encoder_kwargs = {k: v for k, v in self.encoder_config.to_json().items() if k != "in_channels"}
        try:
            network = SwinUNet(self.in_channels, 2, False, encoder=encoder_kwargs, decoder=SWIN_DECODER)
        except ValueError as e:
            raise PretrainUserError(f"This encoder configuration cannot be fine-tuned by SwinUNet: {e}") from None
        self.load_into(network, model, workdir, metadata)
