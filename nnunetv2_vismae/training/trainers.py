"""Fine-tuning trainers: nnU-Net's trainer with a transformer recipe and pretrained-encoder loading."""
from __future__ import annotations

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from torch import nn
from torch._dynamo import OptimizedModule
from torch.nn.parallel import DistributedDataParallel

from nnunetv2_vismae.checkpoint import CheckpointError, load_encoder_into, verify_checkpoint
from nnunetv2_vismae.planning.vismae_plans import PRETRAINED_KEY
from nnunetv2_vismae.training.precision import cpu_bf16_enabled, run_forward_in_bf16
from nnunetv2_vismae.training.schedules import WarmupPolyLRScheduler


def unwrap(network: nn.Module) -> nn.Module:
    """The plain network inside DDP and torch.compile wrappers."""
    if isinstance(network, DistributedDataParallel):
        network = network.module
    if isinstance(network, OptimizedModule):
        network = network._orig_mod
    return network


def no_decay(name: str, param: torch.Tensor) -> bool:
    return param.ndim <= 1 or name.endswith("relative_position_bias_table")


class VisMAETrainer(nnUNetTrainer):
    """SwinUNet fine-tuning: AdamW, linear warm-up then poly decay, pretrained encoder from plans.

    The network is whatever the plans name (``nnUNetv2_vismae_plan`` writes SwinUNet); nnU-Net's
    preprocessing, augmentation, loss, deep supervision, validation and inference are unchanged.
    """

    load_pretrained = True
    warmup_fraction = 0.1  # of all epochs; VIS-MAE warmed up for 40 of 150

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.initial_lr = 3e-4
        self.weight_decay = 0.05
        self.betas = (0.9, 0.999)

    @property
    def pretrained_reference(self) -> dict | None:
        return self.configuration_manager.configuration.get(PRETRAINED_KEY)

    def initialize(self):
        super().initialize()
        if cpu_bf16_enabled(self.device):
            run_forward_in_bf16(unwrap(self.network))
            self.print_to_log_file("Network forward runs under CPU bf16 autocast.")
        reference = self.pretrained_reference
        if reference is not None and self.load_pretrained:
            self.load_pretrained_encoder(reference)

    def load_pretrained_encoder(self, reference: dict):
        """Verify the checkpoint against the hash in the plans, load it, refuse partial loads."""
        checkpoint = verify_checkpoint(reference["path"], reference["content_hash"])
        report = load_encoder_into(unwrap(self.network), checkpoint, log=self.print_to_log_file)
        if report.fraction_loaded < 1.0:
            raise CheckpointError(f"{reference['path']} filled only {report.num_loaded} of "
                                  f"{report.num_network_tensors} encoder tensors; refusing to fine-tune "
                                  "a partly random encoder.")

    def parameter_groups(self) -> list[dict]:
        decay, plain = [], []
        for name, param in unwrap(self.network).named_parameters():
            if param.requires_grad:
                (plain if no_decay(name, param) else decay).append(param)
        return [{"params": decay}, {"params": plain, "weight_decay": 0.0}]

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameter_groups(), lr=self.initial_lr, betas=self.betas,
                                      weight_decay=self.weight_decay, fused=self.device.type == "cuda")
        warmup = round(self.num_epochs * self.warmup_fraction) if self.num_epochs > 1 else 0
        scheduler = WarmupPolyLRScheduler(optimizer, self.initial_lr, self.num_epochs, warmup)
        return optimizer, scheduler


class VisMAETrainerScratch(VisMAETrainer):
    """The same network and recipe, always from random weights: the ablation arm."""

    load_pretrained = False
