"""VisMAETrainer and its variants on Swin3dUNet (3d_fullres plans): the network the plans name is built, the
plans' swin3d checkpoint loads hash-verified, layer-wise lr decay reads the 3D encoder's layers, weight decay
spares norms, biases and bias tables, and the frozen encoder stays in eval mode and unchanged."""

from __future__ import annotations

import pytest
import torch

from nnunetv2_vismae.architectures import Swin3dEncoderConfig, Swin3dUNet
from nnunetv2_vismae.checkpoint import read_encoder_checkpoint
from nnunetv2_vismae.optim.parameter_groups import decays, encoder_layer_ids
from nnunetv2_vismae.training import VisMAETrainer, VisMAETrainerFrozen, VisMAETrainerLLRD
from tests.conftest import TINY_ENCODER_3D, save_swin3d_checkpoint
from tests.reliability import plans_reference

from .test_frozen_trainers import bare_trainer
from .test_trainer_parts import _GroupsStub, _TrainerStub

DEPTHS = [1, 2, 1, 1]


def tiny_swin3dunet(**encoder) -> Swin3dUNet:
    torch.manual_seed(0)
    return Swin3dUNet(1, 2, encoder={**TINY_ENCODER_3D, "depths": DEPTHS, **encoder})


def test_layers_are_the_patch_embedding_then_one_per_block_with_merging_after_its_stage():
    network = tiny_swin3dunet()
    layers = encoder_layer_ids(network)
    assert layers["encoder.patch_embed.proj.weight"] == 0
    assert layers["encoder.stages.0.blocks.0.attn.qkv.weight"] == 1
    assert layers["encoder.stages.0.downsample.reduction.weight"] == 1  # with its stage's last block
    assert layers["encoder.stages.1.blocks.0.norm1.weight"] == 2
    assert layers["encoder.stages.1.blocks.1.mlp.linear1.weight"] == 3
    assert layers["encoder.stages.1.downsample.norm.bias"] == 3
    assert layers["encoder.stages.3.downsample.reduction.weight"] == sum(DEPTHS) == 5
    assert set(layers) == {f"encoder.{n}" for n, _ in network.encoder.named_parameters()}


def test_layer_decay_scales_3d_blocks_by_distance_from_the_decoder():
    stub = _GroupsStub(tiny_swin3dunet(), VisMAETrainerLLRD)
    groups = stub.parameter_groups()
    scale_of = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    scales = {name: scale_of[id(p)] for name, p in stub.network.named_parameters()}
    assert scales["encoder.patch_embed.proj.weight"] == pytest.approx(0.75**6)
    assert scales["encoder.stages.3.blocks.0.attn.qkv.weight"] == pytest.approx(0.75)
    assert all(s == 1.0 for n, s in scales.items() if n.startswith("decoder."))
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(p.numel() for p in stub.network.parameters())
    assert not groups[0]["encoder"]  # nnU-Net logs the lr of group 0: the decoder's


def test_weight_decay_spares_norms_biases_and_relative_position_tables():
    spared = {n for n, p in tiny_swin3dunet().named_parameters() if not decays(n, p)}
    assert "encoder.stages.0.blocks.0.attn.relative_position_bias_table" in spared
    assert {"encoder.stages.0.blocks.0.norm1.weight", "encoder.stages.2.downsample.norm.weight"} <= spared
    assert "encoder.patch_embed.proj.bias" in spared
    assert "encoder.stages.0.blocks.0.attn.qkv.weight" not in spared
    assert "encoder.stages.0.downsample.reduction.weight" not in spared


def test_the_plans_swin3d_checkpoint_loads_completely_and_hash_verified(tmp_path):
    path = save_swin3d_checkpoint(tmp_path / "swin3d.safetensors", {**TINY_ENCODER_3D, "depths": DEPTHS}, seed=3)
    network = tiny_swin3dunet()
    stub = _TrainerStub(network)
    VisMAETrainer.load_pretrained_encoder(stub, plans_reference(path))
    for name, tensor in read_encoder_checkpoint(path).tensors.items():
        assert torch.equal(network.encoder.state_dict()[name], tensor), name
    assert any("(100.0%)" in line for line in stub.log)


def test_vismae_trainer_builds_the_swin3dunet_3d_plans_name():
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunetv2_vismae.planning.vismae_plans import derive_vismae3d_plans

    source = {"plans_name": "nnUNetPlans", "configurations": {"3d_fullres": {"patch_size": [32, 32, 32]}}}
    source["configurations"]["3d_fullres"]["batch_size"] = 2
    encoder = Swin3dEncoderConfig.from_json(TINY_ENCODER_3D)
    plans = PlansManager(derive_vismae3d_plans(source, "nnUNetVisMAEPlans", encoder))
    network = VisMAETrainer.build_network_architecture(plans, plans.get_configuration("3d_fullres"), 2, 3)
    assert type(network) is Swin3dUNet and network.encoder.patch_embed.proj.weight.shape[1] == 2
    outputs = network(torch.randn(1, 2, 32, 32, 32))
    assert [tuple(o.shape[2:]) for o in outputs] == [(32 // 2**i,) * 3 for i in range(len(outputs))]


def test_the_frozen_3d_encoder_stays_in_eval_mode_and_unchanged_by_a_train_step():
    trainer = bare_trainer(VisMAETrainerFrozen, tiny_swin3dunet(drop_path_rate=0.5))
    frozen = trainer.frozen_part()
    assert frozen is trainer.network.encoder
    before = {n: p.detach().clone() for n, p in trainer.network.named_parameters()}
    trainer.on_train_epoch_start()
    assert trainer.network.training and not any(m.training for m in frozen.modules())
    trainer.train_step({"data": torch.randn(1, 1, 32, 32, 32), "target": torch.randn(1, 2, 32, 32, 32)})
    after = dict(trainer.network.named_parameters())
    assert all(torch.equal(before[f"encoder.{n}"], p) for n, p in frozen.named_parameters())
    assert any(not torch.equal(before[n], p) for n, p in after.items() if n.startswith("decoder."))
