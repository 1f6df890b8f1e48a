"""nnUNetTrainerMAE: variants, the decoder-first sawtooth warm-up, pretrained encoder + stem loading."""

from __future__ import annotations

import pytest
import torch

from nnunetv2_vismae.checkpoint import save_encoder_checkpoint
from nnunetv2_vismae.checkpoint.cnn_encoder import build_stock_network, cnn_encoder_config
from nnunetv2_vismae.io.nnunet import ext_trainer_folder
from nnunetv2_vismae.training import variants
from nnunetv2_vismae.training.cnn_trainers import (
    nnUNetTrainerMAE,
    nnUNetTrainerMAELowLR,
    nnUNetTrainerMAEScratch,
    nnUNetTrainerMAEScratchLowLR,
)

from tests.reliability import plans_reference

from ..checkpoint.test_spatial_dims import volume_architecture
from ..pretrain.test_cnn_family import residual_architecture


def bare_trainer(network, num_epochs=40) -> nnUNetTrainerMAE:
    """The attributes configure_optimizers and load_pretrained_encoder use, without nnU-Net's setup."""
    trainer = object.__new__(nnUNetTrainerMAE)
    trainer.network, trainer.num_epochs, trainer.log = network, num_epochs, []
    trainer.initial_lr, trainer.weight_decay = nnUNetTrainerMAE.peak_lr, 3e-5
    trainer.print_to_log_file = lambda *args, **kwargs: trainer.log.append(" ".join(map(str, args)))
    return trainer


def test_variants_resolve_and_nnunet_finds_the_trainer():
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    cls = variants.nnUNetTrainerMAE_labels25_100epochs
    assert issubclass(cls, nnUNetTrainerMAE)
    assert variants.parse_variant(cls.__name__)[1] == {"labels": 25, "epochs": 100}
    folder = ext_trainer_folder()
    assert (
        recursive_find_python_class(
            folder, "nnUNetTrainerMAE", None, base_folder=folder, cleanup_imports_from_base_folder=True
        )
        is nnUNetTrainerMAE
    )


def test_decoder_warms_up_alone_then_whole_network_then_poly():
    trainer = bare_trainer(build_stock_network(residual_architecture(), 1), num_epochs=40)
    optimizer, scheduler = trainer.configure_optimizers()
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["nesterov"]
    encoder_lrs, decoder_lrs = [], []
    for epoch in range(40):
        scheduler.step(epoch)
        lr = {g["encoder"]: g["lr"] for g in optimizer.param_groups}
        encoder_lrs.append(lr[True])
        decoder_lrs.append(lr[False])
    assert encoder_lrs[:2] == [0.0, 0.0] and 0 < decoder_lrs[0] < decoder_lrs[1]  # 2 epochs: decoder only
    assert 0 < encoder_lrs[2] < encoder_lrs[3] == max(encoder_lrs)  # whole network warms up linearly
    assert max(encoder_lrs) == pytest.approx(nnUNetTrainerMAE.peak_lr)
    assert all(a > b for a, b in zip(encoder_lrs[4:-1], encoder_lrs[5:]))  # then poly decay


def saved_cnn_encoder(path, architecture, **metadata) -> tuple[torch.nn.Module, dict]:
    """A seeded encoder of the architecture saved as a cnn checkpoint (``metadata`` added, e.g.
    ``spatial_dims=3`` for a 3D one); (encoder, the plans' reference)."""
    torch.manual_seed(0)
    encoder = build_stock_network(architecture, 1).encoder
    save_encoder_checkpoint(
        path,
        encoder.state_dict(),
        {
            "family": "cnn",
            "encoder_config": cnn_encoder_config(architecture, 1),
            "normalization": {"scheme": "zscore"},
            **metadata,
        },
    )
    return encoder, plans_reference(path)


def test_pretrained_encoder_and_stem_load_with_a_report(tmp_path):
    architecture = residual_architecture()
    path = tmp_path / "enc.safetensors"
    source, reference = saved_cnn_encoder(path, architecture)
    trainer = bare_trainer(build_stock_network(architecture, 1))
    trainer.load_pretrained_encoder(reference)
    for name, tensor in source.state_dict().items():  # stem.* included
        assert torch.equal(trainer.network.encoder.state_dict()[name], tensor)
    assert any(f"Loaded cnn encoder checkpoint {path}" in line and "(100.0%)" in line for line in trainer.log)


@pytest.mark.parametrize("trainer_class, loads", [(nnUNetTrainerMAE, True), (nnUNetTrainerMAEScratch, False)])
def test_the_scratch_twin_never_loads_the_checkpoint_its_plans_name(tmp_path, monkeypatch, trainer_class, loads):
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    architecture = residual_architecture()
    pretrained, reference = saved_cnn_encoder(tmp_path / "enc.safetensors", architecture)
    monkeypatch.setattr(trainer_class, "pretrained_reference", property(lambda self: reference))
    monkeypatch.setattr(
        nnUNetTrainer, "initialize", lambda self: setattr(self, "network", build_stock_network(architecture, 1))
    )  # nnU-Net's setup, reduced to building the network
    trainer = bare_trainer(None)
    trainer.__class__, trainer.device = trainer_class, torch.device("cpu")
    trainer.initialize()
    same = [
        torch.equal(trainer.network.encoder.state_dict()[k], t)
        for k, t in pretrained.state_dict().items()
        if t.ndim > 1
    ]  # convolutions: random init differs, norm weights start at 1 either way
    assert all(same) if loads else not any(same)
    assert any("Loaded cnn encoder checkpoint" in line for line in trainer.log) == loads


def test_a_3d_encoder_and_stem_load_into_a_3d_network_with_more_input_channels(tmp_path):
    architecture = volume_architecture(residual_architecture())
    path = tmp_path / "enc3d.safetensors"
    source, reference = saved_cnn_encoder(path, architecture, spatial_dims=3)
    trainer = bare_trainer(build_stock_network(architecture, 2))  # two input channels, pretrained on one
    trainer.load_pretrained_encoder(reference)
    loaded = trainer.network.encoder.state_dict()
    for name, tensor in source.state_dict().items():
        if loaded[name].shape == tensor.shape:
            assert torch.equal(loaded[name], tensor)
    (report,) = trainer.log
    assert (
        "(100.0%)" in report and "0 missing" in report and "stem.convs.0.conv.weight: input channels 1 -> 2" in report
    )


@pytest.mark.parametrize("checkpoint_dims", [2, 3])
def test_a_checkpoint_of_other_dimensions_stops_nnunetv2_train_in_one_sentence(tmp_path, monkeypatch, checkpoint_dims):
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    architecture_2d = residual_architecture()
    checkpoint_architecture = architecture_2d if checkpoint_dims == 2 else volume_architecture(architecture_2d)
    network_architecture = volume_architecture(architecture_2d) if checkpoint_dims == 2 else architecture_2d
    path = tmp_path / "enc.safetensors"
    _, reference = saved_cnn_encoder(path, checkpoint_architecture)
    monkeypatch.setattr(nnUNetTrainerMAE, "pretrained_reference", property(lambda self: reference))
    monkeypatch.setattr(
        nnUNetTrainer, "initialize", lambda self: setattr(self, "network", build_stock_network(network_architecture, 1))
    )
    trainer = bare_trainer(None)
    trainer.device = torch.device("cpu")
    with pytest.raises(SystemExit) as info:
        trainer.initialize()
    assert str(info.value).startswith(
        f"nnUNetTrainerMAE: Encoder checkpoint {path} holds a {checkpoint_dims}D encoder, but the network's encoder "
        f"is {5 - checkpoint_dims}D;"
    )


def test_the_cnn_recipe_peaks_at_nnunets_learning_rate_and_its_ablation_at_a_tenth():
    # measured: 1e-3 cost 9 (pretrained) and 12 (scratch) Dice points at 800 iterations
    # (docs/results/ablation-1-first-round.md)
    assert nnUNetTrainerMAE.peak_lr == nnUNetTrainerMAEScratch.peak_lr == 1e-2
    assert nnUNetTrainerMAELowLR.peak_lr == nnUNetTrainerMAEScratchLowLR.peak_lr == 1e-3
    assert nnUNetTrainerMAEScratchLowLR.load_pretrained is False and nnUNetTrainerMAELowLR.load_pretrained
