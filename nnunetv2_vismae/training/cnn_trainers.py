"""``nnUNetTrainerMAE``: nnU-Net's own network fine-tuned from a ``cnn`` (SparK-style) encoder checkpoint."""

from __future__ import annotations

import torch
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunetv2_vismae.checkpoint.cnn_encoder import encoder_and_stem_as_encoder, load_root
from nnunetv2_vismae.checkpoint.network_classes import swin_network_classes
from nnunetv2_vismae.optim.schedules import SawtoothLRScheduler
from nnunetv2_vismae.training.base import PretrainedEncoderTrainer, unwrap


def refuse_swin_plans(trainer: str, plans: dict, configuration: str) -> None:
    """Stop nnUNetv2_train with one sentence when the plans name SwinUNet or Swin3dUNet (VisMAETrainer's networks),
    before anything is written: the cnn trainers fine-tune nnU-Net's own network, and would fail deep
    inside ``initialize``."""
    network = PlansManager(plans).get_configuration(configuration).network_arch_class_name
    if network in swin_network_classes():  # by name: importing what plans name can run code
        raise SystemExit(
            f"{trainer}: the plans {plans.get('plans_name')} name {network}, which VisMAETrainer "
            f"trains; {trainer} needs plans of nnU-Net's own network (-p nnUNetMAEPlans, which "
            "nnUNetv2_vismae_plan --pretrained writes for a cnn checkpoint)."
        )


class nnUNetTrainerMAE(PretrainedEncoderTrainer):
    """nnU-Net's recipe (network from the plans, augmentation, loss, SGD with Nesterov momentum 0.99,
    poly decay) with the encoder and stem loaded in ``initialize()`` from the checkpoint the plans
    name (hash verified, load report logged; PretrainedEncoderTrainer's), and the warm-up nnU-Net's
    MAE study found best for pretrained CNNs: the decoder alone first, then the whole network warms
    up linearly, then the usual poly schedule, at nnU-Net's peak learning rate.
    """

    # nnU-Net's from-scratch 1e-2: at short budgets 1e-3 (nnU-Net's choice for pretrained CNNs over
    # 1000 epochs) cost 9 Dice points with or without the weights (docs/results/ablation-1-first-round.md)
    peak_lr = 1e-2
    stage_fraction = 0.05  # of all epochs, for each of the two warm-up stages

    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),
    ):
        refuse_swin_plans(type(self).__name__, plans, configuration)
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.initial_lr, self.weight_decay = self.peak_lr, 3e-5  # nnU-Net's weight decay

    def load_pretrained_encoder(self, reference: dict):
        with encoder_and_stem_as_encoder(unwrap(self.network)):
            super().load_pretrained_encoder(reference)

    def frozen_part(self):
        """With ``frozen_encoder``: what ``load_pretrained_encoder`` loads, the encoder and its stem."""
        if not self.frozen_encoder:
            return None
        network = unwrap(self.network)
        return network.get_submodule(load_root(network))

    def configure_optimizers(self):
        self.stop_gradients_of_frozen_part()
        optimizer = torch.optim.SGD(
            self.parameter_groups(), self.initial_lr, weight_decay=self.weight_decay, momentum=0.99, nesterov=True
        )
        stage = max(1, round(self.num_epochs * self.stage_fraction))
        return optimizer, SawtoothLRScheduler(optimizer, self.initial_lr, self.num_epochs, stage, stage)


class nnUNetTrainerMAEScratch(nnUNetTrainerMAE):
    """nnUNetTrainerMAE's network, optimizer, schedule, warm-up and precision, always from random
    weights: the twin that tells what the cnn checkpoint adds from what its recipe does."""

    load_pretrained = False


class nnUNetTrainerMAEFrozen(nnUNetTrainerMAE):
    """The loaded encoder and stem stay fixed (no gradients, eval mode); the decoder trains with the
    recipe's schedule: the probe of what cnn pretraining learned."""

    frozen_encoder = True


class nnUNetTrainerMAEFrozenScratch(nnUNetTrainerMAEFrozen):
    """nnUNetTrainerMAEFrozen's network and recipe with a random encoder and stem, fixed the same way."""

    load_pretrained = False


class nnUNetTrainerMAELowLR(nnUNetTrainerMAE):
    """Ablation: the same recipe at peak learning rate 1e-3, nnU-Net's for pretrained CNNs."""

    peak_lr = 1e-3


class nnUNetTrainerMAEScratchLowLR(nnUNetTrainerMAEScratch):
    """Ablation: the scratch twin of nnUNetTrainerMAELowLR."""

    peak_lr = 1e-3
