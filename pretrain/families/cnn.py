"""The ``cnn`` family: SparK-style masked pretraining of nnU-Net's own 2D or 3D encoder.

The encoder is the one of the network nnU-Net trains for the dataset (PlainConvUNet from
``nnUNetPlans``, ResidualEncoderUNet from the residual-encoder plans), built from the plans of the
first ``-d`` dataset by dynamic-network-architectures, so the checkpoint fits the stock network. Its
spatial dimensions are the plans' (Conv2d: 2D images, Conv3d: volumes); every part below works on both.
Convolutions have no tokens to drop, so sparse convolution is emulated as in SparK: hidden blocks
are zeroed at the input and re-zeroed after the stem and every stage at that stage's resolution,
so the holes stay holes. A light decoder fills them with per-scale mask tokens and reconstructs.
With ``--cnn-visible-norm`` every instance norm of the encoder takes its statistics over the visible
positions only (SparK's sparse normalization), so the zeros of the holes do not shift them.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nnunetv2_vismae.checkpoint.cnn_encoder import build_stock_network, cnn_encoder_config, conv_op_dims
from nnunetv2_vismae.io.nnunet import CONFIGURATION_2D, CONFIGURATION_3D
from pretrain.errors import PretrainUserError
from pretrain.families.base import FamilyOptions, MAEModel, PretrainingFamily, read_plans
from pretrain.masking import window_mask


# ------------------------------------------------------------------------------------- model
OPS = {  # spatial dimensions -> the decoder's conv, transposed conv and norm
    2: (nn.Conv2d, nn.ConvTranspose2d, nn.InstanceNorm2d),
    3: (nn.Conv3d, nn.ConvTranspose3d, nn.InstanceNorm3d),
}


def at_resolution(hidden: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """B x h x w (x d) bool mask -> B x 1 x H' x W' (x D') bool at ``like``'s spatial size (nearest)."""
    return F.interpolate(hidden[:, None].float(), size=like.shape[2:], mode="nearest").bool()


def per_channel(t: torch.Tensor, dims: int) -> torch.Tensor:
    """A C vector shaped 1 x C x 1... to broadcast over ``dims`` spatial axes."""
    return t.view(1, -1, *[1] * dims)


class LightDecoder(nn.Module):
    """SparK-like: per-scale mask tokens fill the holes; each scale is projected (1x1) to half its
    width; from the deepest scale up: transposed conv by that stage's stride, add the next shallower
    projection, one conv block; a last transposed conv by the first stage's stride predicts pixels.
    Output B x C x H x W (x D), as many spatial axes as the strides have."""

    def __init__(self, channels: list[int], strides: list[list[int]], out_channels: int):
        super().__init__()
        dims = len(strides[0])
        conv, transposed, norm = OPS[dims]
        widths = [max(16, c // 2) for c in channels]  # light: a quarter of the encoder's conv cost
        self.mask_tokens = nn.ParameterList(nn.Parameter(torch.zeros(1, c, *[1] * dims)) for c in channels)
        for token in self.mask_tokens:
            nn.init.trunc_normal_(token, std=0.02)
        self.laterals = nn.ModuleList(conv(c, w, 1) for c, w in zip(channels, widths))
        self.ups = nn.ModuleList(
            transposed(widths[i + 1], widths[i], strides[i + 1], strides[i + 1]) for i in range(len(widths) - 1)
        )
        self.blocks = nn.ModuleList(
            nn.Sequential(conv(w, w, 3, padding=1), norm(w, affine=True), nn.LeakyReLU(0.01)) for w in widths[:-1]
        )
        self.head = transposed(widths[0], out_channels, strides[0], strides[0])

    def fill(self, features: list[torch.Tensor], hidden: torch.Tensor) -> list[torch.Tensor]:
        return [
            torch.where(at_resolution(hidden, f), token.to(f.dtype), f) for f, token in zip(features, self.mask_tokens)
        ]

    def forward(self, features: list[torch.Tensor], hidden: torch.Tensor) -> torch.Tensor:
        filled = [lateral(f) for lateral, f in zip(self.laterals, self.fill(features, hidden))]
        x = filled[-1]
        for i in reversed(range(len(self.ups))):
            x = self.blocks[i](self.ups[i](x) + filled[i])
        return self.head(x)


def visible_instance_norm(norm: nn.modules.instancenorm._InstanceNorm, x: torch.Tensor, hidden: torch.Tensor):
    """``norm`` applied to ``x`` (B x C x spatial...) with per-image, per-channel statistics over the visible
    positions only (fp32); the hidden positions come out as zeros, holes as before the norm."""
    visible = (~at_resolution(hidden, x)).float()
    spatial, dims = tuple(range(2, x.ndim)), x.ndim - 2
    count = visible.sum(dim=spatial, keepdim=True).clamp_min(1.0)
    x32 = x.float()
    mean = (x32 * visible).sum(dim=spatial, keepdim=True) / count
    var = ((x32 - mean) ** 2 * visible).sum(dim=spatial, keepdim=True) / count
    y = (x32 - mean) * torch.rsqrt(var + norm.eps)
    if norm.affine:
        y = y * per_channel(norm.weight.float(), dims) + per_channel(norm.bias.float(), dims)
    return y * visible


class CnnMAE(MAEModel):
    """Masked autoencoder around nnU-Net's encoder (the load root of the stock network).

    Shapes (image B x C x H x W, total stride s, cells h = H/s, w = W/s; volumes have a third axis):
        mask:  B x h x w bool, True = hidden (one cell = one pixel of the deepest stage)
        pred:  B x C x H x W
    """

    def __init__(self, encoder: nn.Module, in_channels: int, visible_norm: bool = False):
        super().__init__()
        self.encoder = encoder
        self.decoder = LightDecoder(list(encoder.output_channels), [list(s) for s in encoder.strides], in_channels)
        self._hidden: torch.Tensor | None = None  # the mask of the forward pass under way, for the norms' hooks
        if visible_norm:  # hooks, not replaced modules: the encoder's state dict, the checkpoint, stays nnU-Net's
            for module in encoder.modules():
                if isinstance(module, nn.modules.instancenorm._InstanceNorm):
                    module.register_forward_hook(self._renormalize)

    def _renormalize(self, norm: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        if self._hidden is None:
            return None
        return visible_instance_norm(norm, args[0], self._hidden).to(output.dtype)

    def forward_encoder(self, imgs: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        """Zero the hidden blocks, then re-zero them after the stem and after every stage."""
        self._hidden = mask
        try:
            x = imgs.masked_fill(at_resolution(mask, imgs), 0.0)
            if getattr(self.encoder, "stem", None) is not None:
                x = self.encoder.stem(x)
                x = x.masked_fill(at_resolution(mask, x), 0.0)
            features = []
            for stage in self.encoder.stages:
                x = stage(x)
                x = x.masked_fill(at_resolution(mask, x), 0.0)
                features.append(x)
        finally:
            self._hidden = None
        return features

    def forward_decoder(self, features: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        return self.decoder(features, mask)

    def forward_loss(self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean squared error over hidden pixels only (fp32)."""
        hidden = at_resolution(mask, imgs).float()
        per_pixel = ((pred.float() - imgs.float()) ** 2).mean(dim=1, keepdim=True)
        return (per_pixel * hidden).sum() / hidden.sum()

    def forward(self, imgs: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pred = self.forward_decoder(self.forward_encoder(imgs, mask), mask)
        return self.forward_loss(imgs, pred, mask), pred

    @torch.no_grad()
    def reconstruct(self, imgs, mask, pred):
        pixel_mask = at_resolution(mask, imgs)
        return torch.where(pixel_mask, pred.float(), imgs.float()), pixel_mask


# ------------------------------------------------------------------------ command-line plug-in
@dataclass(frozen=True)
class CnnOptions(FamilyOptions):
    """The cnn family's flags, and the plans its network comes from."""

    plans_dataset: str | None  # --plans-of, else the first -d
    plans: str  # -p
    configuration: str  # -c
    mask_block: tuple[int, ...] | None  # --cnn-mask-block, in pixels (voxels): one side, or one per axis
    mask_ratio: float  # the swin family's --mask-ratio
    norm_pix_loss: bool  # a swin flag, refused here
    visible_norm: bool  # --cnn-visible-norm

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group(
            "cnn family (SparK-style, nnU-Net's own encoder from -d's plans -p/-c; the mask ratio is --mask-ratio)"
        )
        g.add_argument(
            "--cnn-mask-block",
            type=int,
            nargs="+",
            metavar="PIXELS",
            help="side of a hidden square (cube) in pixels (voxels), or one side per axis Z Y X for volumes, a "
            "multiple of the encoder's total stride on that axis (default: the total stride, one cell of the "
            "deepest stage, as SparK).",
        )
        g.add_argument(
            "--cnn-visible-norm",
            action="store_true",
            help="instance-norm statistics over the visible positions only, as SparK's sparse norms "
            "(default: over all positions, the holes' zeros included)",
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "CnnOptions":
        return cls(
            args.plans_of or (args.d[0] if args.d else None),
            args.p,
            args.c,
            None if args.cnn_mask_block is None else tuple(args.cnn_mask_block),
            args.mask_ratio,
            args.norm_pix_loss,
            args.cnn_visible_norm,
        )


# ------------------------------------------------------------------------------------ family
def read_plans_configuration(options: CnnOptions) -> tuple[dict, str]:
    """The configuration ``-c`` of the plans ``-p`` of ``--plans-of`` or else the first ``-d`` dataset, with
    an ``architecture`` block of a 2D or 3D network, and the plans' file."""
    dataset, name = options.plans_dataset, options.configuration
    if dataset is None:
        raise PretrainUserError(
            "--encoder cnn builds nnU-Net's network from a dataset's plans; pass -d DATASET or --plans-of DATASET."
        )
    plans, plans_file = read_plans(dataset, options.plans)
    configuration = plans["configurations"].get(name, {})
    architecture = configuration.get("architecture")
    if architecture is None:
        raise PretrainUserError(f"{plans_file} has no configuration {name!r} with an architecture block.")
    dims = conv_op_dims(architecture["arch_kwargs"].get("conv_op", ""))
    if dims is None:
        raise PretrainUserError(
            f"Configuration {name!r} of {plans_file} is neither a 2D nor a 3D network; --encoder cnn "
            f"pretrains a configuration such as {CONFIGURATION_2D} or {CONFIGURATION_3D}."
        )
    if len(configuration.get("patch_size") or []) != dims:
        raise PretrainUserError(
            f"Configuration {name!r} of {plans_file} has a {dims}D network but the patch size "
            f"{configuration.get('patch_size')}; the plans disagree with themselves."
        )
    return configuration, plans_file


class CnnFamily(PretrainingFamily):
    name = "cnn"
    options_type = CnnOptions
    options: CnnOptions

    def __init__(self, options: CnnOptions, in_channels: int):
        super().__init__(options, in_channels)
        configuration, self.plans_file = read_plans_configuration(options)
        self.architecture = configuration["architecture"]
        self.spatial_dims = conv_op_dims(self.architecture["arch_kwargs"]["conv_op"])
        try:
            self.encoder_config = cnn_encoder_config(self.architecture, in_channels)
        except Exception as e:  # plans naming a network we cannot build
            raise PretrainUserError(
                f"Cannot build the network of {self.plans_file} ({type(e).__name__}: {e})."
            ) from None
        strides = [int(s) for s in torch.tensor(self.encoder_config["strides"]).prod(dim=0).tolist()]
        if self.spatial_dims == 2 and strides[0] != strides[1]:
            raise PretrainUserError(
                f"The network of {self.plans_file} downsamples anisotropically ({strides}); "
                "--encoder cnn needs square 2D stages."
            )
        self.total_stride = strides  # per axis; volumes may downsample some axes less
        self.block = self._block_per_axis(options.mask_block)
        self.mask_settings = {
            "type": "window_sparse",
            "ratio": options.mask_ratio,
            # 2D: one side, as every earlier run recorded it (resume compares these settings)
            **({"block_pixels": self.block[0]} if self.spatial_dims == 2 else {"block_voxels": self.block}),
            "replaced_by": "zeros_per_stage_then_mask_tokens",
        }
        if options.visible_norm:  # only then: the settings of earlier runs, which resume checks, stay as they were
            self.mask_settings["norm_statistics"] = "visible"

    @classmethod
    def image_geometry(cls, options: CnnOptions) -> tuple[int, list[int] | None]:
        configuration, _ = read_plans_configuration(options)
        dims = conv_op_dims(configuration["architecture"]["arch_kwargs"]["conv_op"])
        return dims, (None if dims == 2 else list(configuration["patch_size"]))

    def _block_per_axis(self, requested: tuple[int, ...] | None) -> list[int]:
        """--cnn-mask-block per axis: one cell of the deepest stage by default; one side for every axis, or
        (volumes) one side per axis."""
        if requested is None:
            return list(self.total_stride)
        if len(requested) == 1:
            return list(requested) * self.spatial_dims
        if self.spatial_dims == 3 and len(requested) == 3:
            return list(requested)
        raise PretrainUserError(
            f"--cnn-mask-block takes one side{' or one per axis Z Y X' if self.spatial_dims == 3 else ''} "
            f"for this {self.spatial_dims}D network, got {len(requested)} values."
        )

    def _shown(self, sizes: list[int]) -> str:
        """Sizes as messages show them: one number for square 2D sizes, Z x Y x X for volumes."""
        return str(sizes[0]) if self.spatial_dims == 2 else "x".join(map(str, sizes))

    def validate(self, patch_size: int | list[int]) -> None:
        o, s, block = self.options, self.total_stride, self.block
        patch = [patch_size] * 2 if isinstance(patch_size, int) else list(patch_size)
        if not 0 < o.mask_ratio < 1:
            raise PretrainUserError(f"--mask-ratio must be between 0 and 1, got {o.mask_ratio}.")
        if o.norm_pix_loss:
            raise PretrainUserError("--norm-pix-loss belongs to the swin family; the cnn family regresses pixels.")
        if any(b < 1 or b % t for b, t in zip(block, s)):
            raise PretrainUserError(
                f"--cnn-mask-block {self._shown(block)} must be a positive multiple of the encoder's total stride "
                f"{self._shown(s)}."
            )
        if any(p % b for p, b in zip(patch, block)):
            raise PretrainUserError(
                f"--patch-size {self._shown(patch)} must be a multiple of the mask block ({self._shown(block)} "
                f"{'pixels' if self.spatial_dims == 2 else 'voxels'})."
            )
        blocks = math.prod(p // b for p, b in zip(patch, block))
        if not 0 < round(o.mask_ratio * blocks) < blocks:
            raise PretrainUserError(
                f"--mask-ratio {o.mask_ratio} must hide at least one and keep at least one "
                f"of the {blocks} mask blocks of a patch."
            )

    def build_model(self) -> CnnMAE:
        network = build_stock_network(self.architecture, self.in_channels)
        encoder = network.get_submodule(self.encoder_config["load_root"])
        return CnnMAE(encoder, self.in_channels, self.options.visible_norm)

    def make_mask(self, imgs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        strides = self.total_stride
        return window_mask(
            imgs.shape[0],
            tuple(n // s for n, s in zip(imgs.shape[2:], strides)),
            tuple(b // s for b, s in zip(self.block, strides)),
            self.options.mask_ratio,
            imgs.device,
            generator,
        )

    def stage_channels(self, model: CnnMAE) -> list[int]:
        return list(model.encoder.output_channels)

    def encoder_tensors(self, model: CnnMAE) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().contiguous() for k, v in model.encoder.state_dict().items()}

    def settings(self) -> dict:
        return {"family": self.name, "encoder_config": self.encoder_config, "mask": self.mask_settings}

    def checkpoint_metadata(self) -> dict:
        return {
            "family": self.name,
            "encoder_config": self.encoder_config,
            "mask": self.mask_settings,
            "pretraining_decoder": "spark_light",
            # only for volumes: a 2D checkpoint stays byte for byte what it was (absent means 2)
            **({"spatial_dims": self.spatial_dims} if self.spatial_dims != 2 else {}),
        }

    def check_fine_tunable(self, model: CnnMAE, workdir: str, metadata: dict | None = None) -> None:
        from nnunetv2_vismae.checkpoint.cnn_encoder import encoder_and_stem_as_encoder

        network = build_stock_network(self.architecture, self.in_channels, initialize=False)
        with encoder_and_stem_as_encoder(network):
            self.load_into(network, model, workdir, metadata)
