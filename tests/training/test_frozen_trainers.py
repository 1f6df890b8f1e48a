"""The frozen-encoder probe trainers: the frozen part computes in a training epoch what it computes at
inference (eval mode, so no drop path), keeps its weights through nnU-Net's train_step, and the rest trains."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from nnunetv2_vismae.architectures import SwinUNet
from nnunetv2_vismae.checkpoint.cnn_encoder import build_stock_network
from nnunetv2_vismae.training import VisMAETrainerFrozen, VisMAETrainerFrozenScratch, variants
from nnunetv2_vismae.training.cnn_trainers import nnUNetTrainerMAEFrozen, nnUNetTrainerMAEFrozenScratch

from ..pretrain.test_cnn_family import residual_architecture


def tiny_swinunet() -> SwinUNet:
    torch.manual_seed(0)
    encoder = {"embed_dim": 12, "depths": [1, 2, 1, 1], "num_heads": [1, 1, 2, 2], "window_size": 4}
    return SwinUNet(1, 2, encoder={**encoder, "drop_path_rate": 0.5})  # drop path shows in train mode


def tiny_cnn_network() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_stock_network(residual_architecture(), 1)


def bare_trainer(cls, network):
    """What on_train_epoch_start, configure_optimizers and nnU-Net's train_step use, without nnU-Net's setup."""
    trainer = object.__new__(cls)
    trainer.network, trainer.num_epochs, trainer.current_epoch = network, 10, 0
    trainer.initial_lr = getattr(cls, "peak_lr", 1e-3)
    trainer.weight_decay, trainer.betas = 0.05, (0.9, 0.999)
    trainer.device, trainer.grad_scaler = torch.device("cpu"), None
    trainer.print_to_log_file = lambda *args, **kwargs: None
    trainer.logger = SimpleNamespace(log=lambda *args: None)
    trainer.loss = lambda output, target: ((output - target) ** 2).mean()
    trainer.optimizer, trainer.lr_scheduler = trainer.configure_optimizers()
    return trainer


def frozen_features(frozen: torch.nn.Module, image: torch.Tensor) -> torch.Tensor:
    """The frozen part's stage outputs for ``image`` (Swin encoder, or cnn encoder with its stem), flattened."""
    with torch.no_grad():
        return torch.cat([f.flatten() for f in frozen(image)])


CASES = [
    pytest.param(VisMAETrainerFrozen, tiny_swinunet, id="swin"),
    pytest.param(nnUNetTrainerMAEFrozen, tiny_cnn_network, id="cnn"),
]


@pytest.mark.parametrize("cls, build", CASES)
def test_the_frozen_part_computes_as_at_inference_during_a_training_epoch(cls, build):
    trainer = bare_trainer(cls, build())
    frozen, image = trainer.frozen_part(), torch.randn(2, 1, 64, 64)
    trainer.on_train_epoch_start()
    assert trainer.network.training and not any(m.training for m in frozen.modules())
    assert any(m.training for m in trainer.network.decoder.modules())  # the rest trains as nnU-Net wants
    first, second = (frozen_features(frozen, image) for _ in range(2))
    assert torch.equal(first, second)
    frozen.eval()
    assert torch.equal(first, frozen_features(frozen, image))  # what inference computes
    if cls is VisMAETrainerFrozen:  # the test can fail: in train mode drop path changes the output
        frozen.train()
        assert not torch.equal(frozen_features(frozen, image), first)


@pytest.mark.parametrize("cls, build", CASES)
def test_a_train_step_changes_the_decoder_and_not_the_frozen_part(cls, build):
    trainer = bare_trainer(cls, build())
    frozen = trainer.frozen_part()
    frozen_ids = {id(p) for p in frozen.parameters()}
    decoder = [(n, p) for n, p in trainer.network.named_parameters() if id(p) not in frozen_ids]
    before = {n: p.detach().clone() for n, p in trainer.network.named_parameters()}
    trainer.on_train_epoch_start()
    trainer.lr_scheduler.step(5)  # past the cnn recipe's warm-up start, where the lr is above 0
    trainer.train_step({"data": torch.randn(2, 1, 64, 64), "target": torch.randn(2, 2, 64, 64)})
    assert all(not p.requires_grad for p in frozen.parameters())
    after = dict(trainer.network.named_parameters())
    assert all(torch.equal(before[n], after[n]) for n, p in frozen.named_parameters(prefix=prefix(trainer)))
    assert any(not torch.equal(before[n], p) for n, p in decoder)


def prefix(trainer) -> str:
    frozen = trainer.frozen_part()
    return next(name for name, module in trainer.network.named_modules() if module is frozen)


def test_the_cnn_frozen_part_is_what_the_checkpoint_loads_stem_included():
    trainer = bare_trainer(nnUNetTrainerMAEFrozen, tiny_cnn_network())
    assert trainer.frozen_part() is trainer.network.encoder
    assert trainer.network.encoder.stem is not None
    assert all(not p.requires_grad for p in trainer.network.encoder.stem.parameters())


def test_without_freezing_nothing_is_frozen():
    from nnunetv2_vismae.training import VisMAETrainer
    from nnunetv2_vismae.training.cnn_trainers import nnUNetTrainerMAE

    for cls, build in ((VisMAETrainer, tiny_swinunet), (nnUNetTrainerMAE, tiny_cnn_network)):
        trainer = bare_trainer(cls, build())
        trainer.on_train_epoch_start()
        assert trainer.frozen_part() is None
        assert all(p.requires_grad for p in trainer.network.parameters())
        assert all(m.training for m in trainer.network.modules())


@pytest.mark.parametrize(
    "twin, pretrained",
    [(VisMAETrainerFrozenScratch, VisMAETrainerFrozen), (nnUNetTrainerMAEFrozenScratch, nnUNetTrainerMAEFrozen)],
)
def test_the_random_twins_freeze_the_same_way_and_never_load(twin, pretrained):
    assert issubclass(twin, pretrained) and twin.frozen_encoder and not twin.load_pretrained
    assert pretrained.load_pretrained


@pytest.mark.parametrize(
    "name",
    [
        "VisMAETrainerFrozenScratch_labels10_5epochs_20iters",
        "nnUNetTrainerMAEFrozen_labels25",
        "nnUNetTrainerMAEFrozenScratch_3epochs",
    ],
)
def test_variants_of_the_frozen_trainers_resolve_like_nnunet_looks_them_up(name):
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    from nnunetv2_vismae.io.nnunet import ext_trainer_folder

    folder = ext_trainer_folder()
    found = recursive_find_python_class(folder, name, None, base_folder=folder, cleanup_imports_from_base_folder=True)
    assert found is getattr(variants, name) and issubclass(found, variants.BASES[name.split("_")[0]])
