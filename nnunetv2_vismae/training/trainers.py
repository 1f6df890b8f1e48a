"""Fine-tuning trainers: nnU-Net's trainer with a transformer recipe and pretrained-encoder loading."""
from __future__ import annotations

import torch
from nnunetv2.paths import nnUNet_results
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from torch import nn
from torch._dynamo import OptimizedModule
from torch.nn.parallel import DistributedDataParallel

from nnunetv2_vismae.checkpoint import CheckpointError, load_encoder_into, verify_checkpoint
from nnunetv2_vismae.checkpoint.reference import PRETRAINED_KEY
from nnunetv2_vismae.device import cpu_bf16_enabled, fused_adamw, run_forward_in_bf16
from nnunetv2_vismae.training.schedules import SawtoothLRScheduler, WarmupPolyLRScheduler


def unwrap(network: nn.Module) -> nn.Module:
    """The plain network inside DDP and torch.compile wrappers."""
    if isinstance(network, DistributedDataParallel):
        network = network.module
    if isinstance(network, OptimizedModule):
        network = network._orig_mod
    return network


def no_decay(name: str, param: torch.Tensor) -> bool:
    return param.ndim <= 1 or name.endswith("relative_position_bias_table")


def encoder_layer_id(name: str, depths) -> int:
    """0 for the patch embedding, then one per Swin block in order (patch merging goes with the
    first block of its stage); the final norm shares the last block's id."""
    parts = name.split(".")
    if parts[1] == "patch_embed":
        return 0
    if parts[1] == "norm":
        return sum(depths)
    stage = int(parts[2])
    block = int(parts[4]) if parts[3] == "blocks" else 0
    return sum(depths[:stage]) + block + 1


class VisMAETrainer(nnUNetTrainer):
    """SwinUNet fine-tuning: AdamW, linear warm-up then poly decay, pretrained encoder from plans.

    The network is whatever the plans name (``nnUNetv2_vismae_plan`` writes SwinUNet); nnU-Net's
    preprocessing, augmentation, loss, deep supervision, validation and inference are unchanged.
    """

    load_pretrained = True
    warmup_fraction = 0.1  # of all epochs; VIS-MAE warmed up for 40 of 150
    layer_decay: float | None = None  # encoder lr multiplied by this per block away from the decoder
    frozen_encoder = False

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        if not nnUNet_results.is_set():  # nnU-Net's trainer would fail making a folder of None
            raise SystemExit(f"{type(self).__name__}: the environment variable nnUNet_results is not set; "
                             "nnUNetv2_train needs it for the folder the trained model is written to "
                             "(export nnUNet_results=/path/to/nnUNet_results).")
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
            try:
                self.load_pretrained_encoder(reference)
            except CheckpointError as e:  # inside nnU-Net's own command: one sentence, exit 1, no traceback
                raise SystemExit(f"{type(self).__name__}: {e}") from None

    def load_pretrained_encoder(self, reference: dict):
        """Verify the checkpoint against the hash in the plans and load it (a partial load is refused there)."""
        checkpoint = verify_checkpoint(reference["path"], reference["content_hash"])
        load_encoder_into(unwrap(self.network), checkpoint, log=self.print_to_log_file)

    def parameter_groups(self) -> list[dict]:
        """AdamW groups by (lr scale, weight decay, encoder or not); frozen parameters left out."""
        network = unwrap(self.network)
        groups: dict[tuple, list] = {}
        for name, param in network.named_parameters():
            if param.requires_grad:
                key = (self.lr_scale(name, network), not no_decay(name, param), name.startswith("encoder."))
                groups.setdefault(key, []).append(param)
        decoder_first = sorted(groups.items(), key=lambda g: g[0][2])  # nnU-Net logs group 0's lr
        return [{"params": params, "lr_scale": scale, "weight_decay": self.weight_decay if decay else 0.0,
                 "encoder": encoder} for (scale, decay, encoder), params in decoder_first]

    def lr_scale(self, name: str, network: nn.Module) -> float:
        """``layer_decay ** (distance from the decoder)`` for encoder tensors; 1 without layer decay."""
        if self.layer_decay is None or not name.startswith("encoder."):
            return 1.0
        depths = network.encoder.config.depths
        return self.layer_decay ** (sum(depths) + 1 - encoder_layer_id(name, depths))

    def configure_optimizers(self):
        if self.frozen_encoder:
            unwrap(self.network).encoder.requires_grad_(False)
        optimizer = torch.optim.AdamW(self.parameter_groups(), lr=self.initial_lr, betas=self.betas,
                                      weight_decay=self.weight_decay, fused=fused_adamw(self.device))
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
    """The pretrained encoder stays fixed; only the decoder trains."""

    frozen_encoder = True


class VisMAETrainerSawtooth(VisMAETrainer):
    """Decoder only while it warms up (5% of the epochs), then the whole network warms up again
    (5%) and decays, as nnU-Net's MAE pretraining study found best."""

    stage_fraction = 0.05

    def configure_optimizers(self):
        optimizer, _ = super().configure_optimizers()
        stage = max(1, round(self.num_epochs * self.stage_fraction))
        return optimizer, SawtoothLRScheduler(optimizer, self.initial_lr, self.num_epochs, stage, stage)
