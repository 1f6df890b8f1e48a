"""The ``swin3d`` family: VIS-MAE carried over to volumes, around the 3D Swin encoder of ``Swin3dUNet``.

As in 2D, hidden patches cannot be dropped from windowed attention: after the patch embedding the
patches of hidden 3D blocks (``mask_block`` patches per axis) are replaced by a learned mask token,
the stages run on the full grid, and the loss is the MSE over the voxels of the hidden patches only.
The decoder is light and convolutional (the 2D ``light`` decoder's role; a pixel shuffle by the
encoder's whole stride would need 2^12 times the channels in 3D): from the deepest map, a transposed
convolution per stage doubles the resolution back to the patch grid at half the stage's channels,
then one 3x3x3 convolution and a per-patch linear prediction. No skip connections, as VIS-MAE's.
The default patch is the plans' ``-c`` patch rounded down per axis to a multiple of the encoder's
total stride (at least one stride).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

import torch
from torch import nn

from nnunetv2_vismae.architectures.swin3d_encoder import Swin3dEncoder, Swin3dEncoderConfig
from pretrain.errors import PretrainUserError
from pretrain.families.base import FamilyOptions, PretrainingFamily, read_plans
from pretrain.families.swin import SwinMAE
from pretrain.masking import window_mask


# ------------------------------------------------------------------------------------- model
LIGHT_3D_DECODER = "light3d"  # the reconstruction decoder's name in the settings and the checkpoint


class LightMAEDecoder3d(nn.Module):
    """Deepest map B x C_last x d x h x w -> B x L x (pz * py * px * C) at the patch grid (L = its tokens):
    a 1x1x1 projection, one transposed conv (x2, GELU) per stage, a 3x3x3 conv and a 1x1x1 prediction."""

    def __init__(self, stage_dims: list[int], patch_size: tuple[int, int, int], out_channels: int):
        super().__init__()
        widths = [max(16, dim // 2) for dim in stage_dims]  # light: half the encoder's channels at each scale
        self.project = nn.Conv3d(stage_dims[-1], widths[-1], 1)
        self.ups = nn.Sequential(
            *(
                nn.Sequential(nn.ConvTranspose3d(widths[i + 1], widths[i], 2, 2), nn.GELU())
                for i in reversed(range(len(widths) - 1))
            )
        )
        self.refine = nn.Sequential(nn.Conv3d(widths[0], widths[0], 3, padding=1), nn.GELU())
        self.pred = nn.Conv3d(widths[0], math.prod(patch_size) * out_channels, 1)

    def forward(self, deepest: torch.Tensor) -> torch.Tensor:
        x = self.pred(self.refine(self.ups(self.project(deepest))))  # B x pz*py*px*C x d x h x w
        return x.flatten(2).transpose(1, 2)


class Swin3dMAE(SwinMAE):
    """Masked autoencoder with the 3D Swin encoder; the 2D MAE's token replacement, loss and forward on
    volumes (``patchify`` and the previews' pixel mask are what differ).

    Shapes (patch pz x py x px, volume B x C x D x H x W, grid d = D/pz, h = H/py, w = W/px, L = d * h * w):
        mask:  B x d x h x w bool, True = hidden
        pred:  B x L x (pz * py * px * C), voxels of every patch (the loss uses the hidden ones)
    """

    def __init__(self, config: Swin3dEncoderConfig, norm_pix_loss: bool = False):
        nn.Module.__init__(self)  # not SwinMAE's: its encoder and decoders are 2D
        self.config, self.norm_pix_loss = config, norm_pix_loss
        self.patch_size = config.patch_size
        self.encoder = Swin3dEncoder(config)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, 1, 1, config.embed_dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.decoder = LightMAEDecoder3d(config.stage_dims, config.patch_size, config.in_channels)

    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """B x C x D x H x W -> B x L x (pz * py * px * C), by permute (see SwinMAE.patchify)."""
        b, c, *size = imgs.shape
        (pz, py, px), (d, h, w) = self.patch_size, (n // p for n, p in zip(size, self.patch_size))
        x = imgs.reshape(b, c, d, pz, h, py, w, px)
        return x.permute(0, 2, 4, 6, 3, 5, 7, 1).reshape(b, d * h * w, pz * py * px * c)

    def unpatchify(self, x: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """B x L x (pz * py * px * C) -> B x C x D x H x W, for a patch grid ``grid`` = (d, h, w)."""
        (pz, py, px), (d, h, w) = self.patch_size, grid
        b, c = x.shape[0], x.shape[-1] // (pz * py * px)
        x = x.reshape(b, d, h, w, pz, py, px, c)
        return x.permute(0, 7, 1, 4, 2, 5, 3, 6).reshape(b, c, d * pz, h * py, w * px)

    @torch.no_grad()
    def reconstruct(self, imgs, mask, pred):
        pred = pred.float()
        if self.norm_pix_loss:  # back to voxel space with the true patch statistics
            target = self.patchify(imgs.float())
            pred = pred * (target.var(-1, keepdim=True) + 1e-6) ** 0.5 + target.mean(-1, keepdim=True)
        pixel_mask = mask
        for axis, p in enumerate(self.patch_size, start=1):
            pixel_mask = pixel_mask.repeat_interleave(p, axis)
        pixel_mask = pixel_mask.unsqueeze(1)  # B x 1 x D x H x W
        recon = torch.where(pixel_mask, self.unpatchify(pred, mask.shape[1:]), imgs.float())
        return recon, pixel_mask


# ------------------------------------------------------------------------ command-line plug-in
def per_axis(values: list[int] | None, flag: str, default: tuple[int, int, int]) -> tuple[int, int, int]:
    """A shared per-axis flag for volumes: one side for every axis or one per axis Z Y X; ``default`` unset."""
    if values is None:
        return default
    if len(values) not in (1, 3):
        raise PretrainUserError(f"{flag} takes one side or one per axis Z Y X for volumes, got {len(values)} values.")
    return tuple(values * 3 if len(values) == 1 else values)


@dataclass(frozen=True)
class Swin3dOptions(FamilyOptions):
    """The swin3d family's settings: the swin family's flags with SwinUNETR's defaults where those differ,
    and the plans whose patch is the default one."""

    plans_dataset: str | None  # --plans-of, else the first -d, else --preprocess-like
    plans: str  # -p
    configuration: str  # -c
    embed_dim: int
    depths: tuple[int, ...]
    heads: tuple[int, ...]
    window: tuple[int, int, int]
    encoder_patch: tuple[int, int, int]
    drop_path: float
    mask_ratio: float
    mask_block: tuple[int, int, int]  # in patches
    norm_pix_loss: bool

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """None of its own: the swin family's flags (their help names swin3d's defaults) and --plans-of."""

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Swin3dOptions":
        half_deepest_cell = 2 ** (len(args.depths) - 1)  # in patches: each stage halves every axis
        return cls(
            plans_dataset=args.plans_of or (args.d[0] if args.d else None) or args.preprocess_like,
            plans=args.p,
            configuration=args.c,
            embed_dim=48 if args.embed_dim is None else args.embed_dim,
            depths=tuple(args.depths),
            heads=tuple(args.heads),
            window=per_axis(args.window, "--window", (7, 7, 7)),
            encoder_patch=per_axis(args.encoder_patch, "--encoder-patch", (2, 2, 2)),
            drop_path=args.drop_path,
            mask_ratio=args.mask_ratio,
            mask_block=per_axis(args.mask_block, "--mask-block", (half_deepest_cell,) * 3),
            norm_pix_loss=args.norm_pix_loss,
        )


# ------------------------------------------------------------------------------------ family
def shown(sizes) -> str:
    return "x".join(map(str, sizes))


def plans_patch_size(options: Swin3dOptions) -> list[int]:
    """The patch size of the 3D configuration ``-c`` of the plans ``-p`` of the plans dataset."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunetv2_vismae.io.nnunet import configuration_dims

    if options.plans_dataset is None:
        raise PretrainUserError(
            "--encoder swin3d follows a dataset's plans (its 3D configuration -c); pass -d DATASET, --plans-of "
            "DATASET or --preprocess-like DATASET."
        )
    plans, plans_file = read_plans(options.plans_dataset, options.plans)
    if configuration_dims(plans, options.configuration, PretrainUserError) != 3:
        raise PretrainUserError(
            f"Configuration {options.configuration!r} of {plans_file} is not 3D; --encoder swin3d pretrains on "
            "volumes of a configuration such as 3d_fullres."
        )
    return list(PlansManager(plans).get_configuration(options.configuration).patch_size)


def encoder_config(options: Swin3dOptions, in_channels: int) -> Swin3dEncoderConfig:
    """The encoder of ``options``; a configuration the encoder refuses is one sentence."""
    o = options
    try:
        return Swin3dEncoderConfig(
            in_channels, o.encoder_patch, o.embed_dim, o.depths, o.heads, o.window, drop_path_rate=o.drop_path
        )
    except ValueError as e:
        raise PretrainUserError(f"{e}.") from None


class Swin3dFamily(PretrainingFamily):
    name = "swin3d"
    options_type = Swin3dOptions
    options: Swin3dOptions
    spatial_dims = 3

    def __init__(self, options: Swin3dOptions, in_channels: int):
        super().__init__(options, in_channels)
        self.encoder_config = encoder_config(options, in_channels)
        block = list(options.mask_block)
        self.mask_settings = {
            "type": "window",
            "ratio": options.mask_ratio,
            "block_patches": block,
            "block_voxels": [b * p for b, p in zip(block, self.encoder_config.patch_size)],
            "replaced_by": "mask_token",
        }

    @classmethod
    def image_geometry(cls, options: Swin3dOptions) -> tuple[int, list[int]]:
        """Volumes; the plans' patch rounded down per axis to a multiple of the total stride, at least one."""
        stride = encoder_config(options, 1).total_stride
        return 3, [max(s, p // s * s) for p, s in zip(plans_patch_size(options), stride)]

    def validate(self, patch_size: list[int]) -> None:
        cfg, o = self.encoder_config, self.options
        if not 0 < o.mask_ratio < 1:
            raise PretrainUserError(f"--mask-ratio must be between 0 and 1, got {o.mask_ratio}.")
        for i, (dim, heads) in enumerate(zip(cfg.stage_dims, cfg.num_heads)):
            if dim % heads:
                raise PretrainUserError(f"Stage {i} has dimension {dim}, which --heads {heads} does not divide.")
        if any(p % s for p, s in zip(patch_size, cfg.total_stride)):
            raise PretrainUserError(
                f"--patch-size {shown(patch_size)} must be a multiple of the encoder's total stride "
                f"{shown(cfg.total_stride)} (encoder patch x 2^stages) on every axis."
            )
        grid = [p // q for p, q in zip(patch_size, cfg.patch_size)]
        if any(g % b for g, b in zip(grid, o.mask_block)):
            raise PretrainUserError(
                f"--patch-size {shown(patch_size)} must be a multiple of the mask block ({shown(o.mask_block)} "
                f"patches = {shown(self.mask_settings['block_voxels'])} voxels)."
            )
        blocks = math.prod(g // b for g, b in zip(grid, o.mask_block))
        if not 0 < round(o.mask_ratio * blocks) < blocks:
            raise PretrainUserError(
                f"--mask-ratio {o.mask_ratio} must hide at least one and keep at least one "
                f"of the {blocks} mask blocks of a patch."
            )

    def build_model(self) -> Swin3dMAE:
        return Swin3dMAE(self.encoder_config, self.options.norm_pix_loss)

    def make_mask(self, imgs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        grid = tuple(n // p for n, p in zip(imgs.shape[2:], self.encoder_config.patch_size))
        return window_mask(
            imgs.shape[0], grid, self.options.mask_block, self.options.mask_ratio, imgs.device, generator
        )

    def stage_channels(self, model: Swin3dMAE) -> list[int]:
        return list(model.encoder.stage_dims)

    def encoder_tensors(self, model: Swin3dMAE) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().contiguous() for k, v in model.encoder.state_dict().items()}

    def settings(self) -> dict:
        return {
            "family": self.name,
            "encoder_config": self.encoder_config.to_json(),
            "pretraining_decoder": LIGHT_3D_DECODER,
            "norm_pix_loss": self.options.norm_pix_loss,
            "mask": self.mask_settings,
        }

    def checkpoint_metadata(self) -> dict:
        return {
            "family": self.name,
            "encoder_config": self.encoder_config.to_json(),
            "mask": self.mask_settings,
            "pretraining_decoder": LIGHT_3D_DECODER,
            "norm_pix_loss": self.options.norm_pix_loss,
        }

    def check_fine_tunable(self, model: Swin3dMAE, workdir: str, metadata: dict | None = None) -> None:
        from nnunetv2_vismae.architectures.swin3d_unet import Swin3dUNet

        encoder_kwargs = {k: v for k, v in self.encoder_config.to_json().items() if k != "in_channels"}
        try:
            network = Swin3dUNet(self.in_channels, 2, False, encoder=encoder_kwargs)
        except ValueError as e:
            raise PretrainUserError(f"This encoder configuration cannot be fine-tuned by Swin3dUNet: {e}") from None
        self.load_into(network, model, workdir, metadata)
