"""``VisMAETrainer``, the swin family's fine-tuning trainer, and its variants: AdamW with warm-up then poly decay."""

from __future__ import annotations

import torch

from nnunetv2_vismae.device import fused_adamw
from nnunetv2_vismae.optim.schedules import SawtoothLRScheduler, WarmupPolyLRScheduler
from nnunetv2_vismae.training.base import PretrainedEncoderTrainer


class VisMAETrainer(PretrainedEncoderTrainer):
    """SwinUNet fine-tuning: AdamW, linear warm-up then poly decay, pretrained encoder from plans.

    The network is whatever the plans name (``nnUNetv2_vismae_plan`` writes SwinUNet); nnU-Net's
    preprocessing, augmentation, loss, deep supervision, validation and inference are unchanged.
    Precision, the pretrained encoder's loading and freezing: ``PretrainedEncoderTrainer``'s.
    """

    warmup_fraction = 0.1  # of all epochs; VIS-MAE warmed up for 40 of 150

    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),
    ):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.initial_lr = 3e-4
        self.weight_decay = 0.05
        self.betas = (0.9, 0.999)

    def configure_optimizers(self):
        self.stop_gradients_of_frozen_part()
        optimizer = torch.optim.AdamW(
            self.parameter_groups(),
            lr=self.initial_lr,
            betas=self.betas,
            weight_decay=self.weight_decay,
            fused=fused_adamw(self.device),
        )
        warmup = round(self.num_epochs * self.warmup_fraction) if self.num_epochs > 1 else 0
        scheduler = WarmupPolyLRScheduler(optimizer, self.initial_lr, self.num_epochs, warmup)
        return optimizer, scheduler


class VisMAETrainerScratch(VisMAETrainer):
    """The same network and recipe, always from random weights: the ablation arm."""

    load_pretrained = False


class VisMAETrainerLLRD(VisMAETrainer):
    """Layer-wise learning-rate decay: each encoder block learns 0.75x as fast as the one above it."""

    layer_decay = 0.75


class VisMAETrainerFrozen(VisMAETrainer):
    """The pretrained encoder stays fixed (no gradients, eval mode); the decoder and its stem train:
    the probe of what pretraining learned."""

    frozen_encoder = True


class VisMAETrainerFrozenScratch(VisMAETrainerFrozen):
    """VisMAETrainerFrozen's network and recipe with a random encoder, fixed the same way: the probe's twin."""

    load_pretrained = False


class VisMAETrainerSawtooth(VisMAETrainer):
    """Decoder only while it warms up (5% of the epochs), then the whole network warms up again
    (5%) and decays, as nnU-Net's MAE pretraining study found best."""

    stage_fraction = 0.05

    def configure_optimizers(self):
        optimizer, _ = super().configure_optimizers()
        stage = max(1, round(self.num_epochs * self.stage_fraction))
        return optimizer, SawtoothLRScheduler(optimizer, self.initial_lr, self.num_epochs, stage, stage)
