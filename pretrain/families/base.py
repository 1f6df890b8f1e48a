"""The encoder-family plug-in: what the pretraining stage needs to know about one kind of encoder.

Sources, the training loop, DDP, checkpoints and monitoring are family-agnostic; a family supplies
its MAE model (encoder + mask token/masking + reconstruction decoder), its mask generator, the
encoder tensors and metadata for the checkpoint contract, and a check that a fine-tuning network
accepts those tensors. Each family file holds three parts: the model (plain ``nn.Module``s), the
family (built from typed options), and its command-line plug-in (the options and their flags). A
new family adds such a file and registers its family in ``pretrain.families.FAMILIES``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from torch import nn

from pretrain.errors import PretrainUserError


class MAEModel(nn.Module, ABC):
    """Contract of a family's masked autoencoder as the training loop uses it. Its ``encoder`` is the
    shared encoder: ``encoder(imgs)`` returns each stage's output (B x C x ...), as fine-tuning runs it."""

    @abstractmethod
    def forward(self, imgs: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """imgs B x C x H x W, mask from ``PretrainingFamily.make_mask`` -> (scalar loss, prediction)."""

    @abstractmethod
    def reconstruct(
        self, imgs: torch.Tensor, mask: torch.Tensor, pred: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """For previews: (reconstruction B x C x H x W with visible pixels kept, pixel mask B x 1 x H x W)."""


class FamilyOptions(ABC):
    """A family's command-line plug-in: a dataclass of the family's settings and the flags they come from."""

    @classmethod
    @abstractmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add the family's own flags (encoder shape, decoder, masking)."""

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "FamilyOptions":
        """The values of the flags named like the fields."""
        return cls(**{field.name: getattr(args, field.name) for field in dataclasses.fields(cls)})


class PretrainingFamily(ABC):
    """One encoder family of the pretraining stage, built from its options."""

    name: ClassVar[str] = ""
    options_type: ClassVar[type[FamilyOptions]]

    spatial_dims: int = 2  # of the images the encoder takes: 2 (images, slices) or 3 (volumes)

    def __init__(self, options: FamilyOptions, in_channels: int):
        self.options, self.in_channels = options, in_channels

    @classmethod
    def image_geometry(cls, options: FamilyOptions) -> tuple[int, list[int] | None]:
        """What the sources must deliver, known before they are read: the spatial dimensions of the images
        the encoder takes with ``options``, and the default patch size (None: the command's 2D default)."""
        return 2, None

    @abstractmethod
    def validate(self, patch_size: int | list[int]) -> None:
        """Raise PretrainUserError if the settings or the patch size (one side in 2D, one per axis in 3D)
        cannot work."""

    @abstractmethod
    def build_model(self) -> MAEModel: ...

    @abstractmethod
    def make_mask(self, imgs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The mask for a batch, made on the batch's device."""

    @abstractmethod
    def stage_channels(self, model: MAEModel) -> list[int]:
        """The channels of each stage output of ``model.encoder``."""

    @abstractmethod
    def encoder_tensors(self, model: MAEModel) -> dict[str, torch.Tensor]:
        """The tensors of the encoder checkpoint (names as the fine-tuning encoder's state dict)."""

    @abstractmethod
    def settings(self) -> dict:
        """Plain-JSON settings (family, encoder config, decoder, mask); must match on resume."""

    @abstractmethod
    def checkpoint_metadata(self) -> dict:
        """Family part of the checkpoint metadata: ``family``, ``encoder_config``, ``mask``."""

    @abstractmethod
    def check_fine_tunable(self, model: MAEModel, workdir: str, metadata: dict | None = None) -> None:
        """Save the encoder (with ``metadata``) as a checkpoint in ``workdir`` and check that it loads
        fully into the fine-tuning network (load_encoder_into raises CheckpointError otherwise). Runs before the
        first step."""

    def load_into(self, network: nn.Module, model: MAEModel, workdir: str, metadata: dict | None = None) -> None:
        """What ``check_fine_tunable`` does once it has the network: save the encoder of ``model`` (with
        ``metadata``, else the family's) as a checkpoint in ``workdir`` and load it into ``network``."""
        from nnunetv2_vismae.checkpoint import load_encoder_into, save_encoder_checkpoint

        path = os.path.join(workdir, "fine_tune_check.safetensors")
        save_encoder_checkpoint(path, self.encoder_tensors(model), metadata or self.checkpoint_metadata())
        load_encoder_into(network, path, log=lambda *a, **k: None)  # raises unless every tensor loads


def read_plans(dataset: str, plans: str) -> tuple[dict, str]:
    """The nnU-Net plans ``plans`` (-p) of a preprocessed dataset, which a family that follows plans builds from,
    and their file."""
    from nnunetv2_vismae.io.nnunet import preprocessed_folder

    plans_file = os.path.join(preprocessed_folder(dataset, PretrainUserError), f"{plans}.json")
    if not os.path.isfile(plans_file):
        raise PretrainUserError(f"Plans file {plans_file} does not exist; check -p.")
    with open(plans_file) as f:
        return json.load(f), plans_file
