"""``PretrainedEncoderTrainer``: what the fine-tuning trainers of every encoder family share."""

from __future__ import annotations

import torch
from nnunetv2.paths import nnUNet_results
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from torch import nn
from torch._dynamo import OptimizedModule
from torch.nn.parallel import DistributedDataParallel

from nnunetv2_vismae.checkpoint import CheckpointError, load_encoder_into
from nnunetv2_vismae.checkpoint.network_classes import architecture_problems, network_classes
from nnunetv2_vismae.checkpoint.reference import PRETRAINED_KEY, verify_reference
from nnunetv2_vismae.device import bf16_autocast, configure_cuda_speed, run_forward_in_bf16
from nnunetv2_vismae.optim.parameter_groups import param_groups


def unwrap(network: nn.Module) -> nn.Module:
    """The plain network inside DDP and torch.compile wrappers."""
    if isinstance(network, DistributedDataParallel):
        network = network.module
    if isinstance(network, OptimizedModule):
        network = network._orig_mod
    return network


class PretrainedEncoderTrainer(nnUNetTrainer):
    """nnU-Net's trainer with a pretrained encoder loaded in ``initialize()`` from the checkpoint the plans
    name (hash verified, load report logged), optionally kept fixed; a family's trainer adds its recipe
    (``configure_optimizers``) and what its encoder is (``frozen_part``).

    Precision (``nnunetv2_vismae.device``): the network's forward under bf16 autocast where the device
    has native bf16, then on CUDA without nnU-Net's GradScaler; elsewhere nnU-Net's own (fp16 autocast
    and GradScaler on CUDA, fp32 on CPU). TF32 for fp32 matmuls on CUDA.
    """

    load_pretrained = True
    layer_decay: float | None = None  # encoder lr multiplied by this per block away from the decoder
    frozen_encoder = False

    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),
    ):
        if not nnUNet_results.is_set():  # nnU-Net's trainer would fail making a folder of None
            raise SystemExit(
                f"{type(self).__name__}: the environment variable nnUNet_results is not set; "
                "nnUNetv2_train needs it for the folder the trained model is written to "
                "(export nnUNet_results=/path/to/nnUNet_results)."
            )
        super().__init__(plans, configuration, fold, dataset_json, device)
        if bf16_autocast(self.device):
            self.grad_scaler = None  # bf16 has fp32's exponent range: nothing to scale (saved as None too)
        configure_cuda_speed(self.device)  # nnUNetv2_train switches cuDNN's autotuner on, not TF32

    @staticmethod
    def build_network_architecture(
        plans_manager, configuration_manager, num_input_channels, num_output_channels, enable_deep_supervision=True
    ) -> nn.Module:
        """nnU-Net's (training and inference), once the plans' architecture block names only listed
        classes: nnU-Net imports what a block names and calls it, so a crafted name runs code."""
        architecture = configuration_manager.configuration.get("architecture")
        problems = architecture_problems(architecture, "architecture", network_classes())
        if problems:
            raise SystemExit(f"Plans {plans_manager.plans_name} are refused: " + " ".join(problems))
        return nnUNetTrainer.build_network_architecture(
            plans_manager, configuration_manager, num_input_channels, num_output_channels, enable_deep_supervision
        )

    @property
    def pretrained_reference(self) -> dict | None:
        return self.configuration_manager.configuration.get(PRETRAINED_KEY)

    def initialize(self):
        super().initialize()
        if bf16_autocast(self.device):
            run_forward_in_bf16(unwrap(self.network), self.device)
            self.print_to_log_file(f"Network forward runs under {self.device.type} bf16 autocast, without GradScaler.")
        reference = self.pretrained_reference
        if reference is not None and self.load_pretrained:
            try:
                self.load_pretrained_encoder(reference)
            except CheckpointError as e:  # inside nnU-Net's own command: one sentence, exit 1, no traceback
                raise SystemExit(f"{type(self).__name__}: {e}") from None

    def load_pretrained_encoder(self, reference: dict):
        """Verify the checkpoint against the hashes in the plans and load it (a partial load is refused there)."""
        checkpoint = verify_reference(reference)
        load_encoder_into(unwrap(self.network), checkpoint, log=self.print_to_log_file)

    def parameter_groups(self) -> list[dict]:
        """Optimizer groups (``optim.parameter_groups``), frozen parameters left out, the decoder's first:
        nnU-Net logs the lr of group 0."""
        groups = param_groups(unwrap(self.network), self.weight_decay, self.layer_decay)
        return sorted(groups, key=lambda group: group["encoder"])

    def frozen_part(self) -> nn.Module | None:
        """What stays fixed with ``frozen_encoder``: the module the checkpoint is loaded into."""
        return unwrap(self.network).encoder if self.frozen_encoder else None

    def on_train_epoch_start(self):
        """nnU-Net puts the whole network in train mode; a frozen part stays in eval mode, so it computes
        in training what it computes at inference (no drop path, no dropout, norms as at inference)."""
        super().on_train_epoch_start()
        frozen = self.frozen_part()
        if frozen is not None:
            frozen.eval()

    def stop_gradients_of_frozen_part(self) -> None:
        frozen = self.frozen_part()
        if frozen is not None:
            frozen.requires_grad_(False)
