import pickle
from types import SimpleNamespace

import pytest
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunetv2_vismae.training import VisMAETrainer, VisMAETrainerScratch, variants
from nnunetv2_vismae.device import CPU_THREADS, cpu_bf16_enabled, run_forward_in_bf16
from nnunetv2_vismae.io.nnunet import ext_trainer_folder
from nnunetv2_vismae.optim.schedules import WarmupPolyLRScheduler

from tests.reliability import plans_reference

from .test_precision import CPU, built_trainer


def test_variant_names_resolve_to_configured_subclasses():
    cls = variants.VisMAETrainerScratch_3epochs_20iters
    assert issubclass(cls, VisMAETrainerScratch) and cls.__name__ == "VisMAETrainerScratch_3epochs_20iters"
    assert variants.parse_variant("nnUNetTrainer_7epochs") == (nnUNetTrainer, {"epochs": 7})
    assert pickle.loads(pickle.dumps(cls)) is cls  # worker processes resolve the same class
    for bad in ("VisMAETrainer", "VisMAETrainer_0epochs", "OtherTrainer_5epochs", "VisMAETrainer_5"):
        assert variants.parse_variant(bad) is None
    with pytest.raises(AttributeError):
        variants.NotATrainer_5epochs


def test_ext_folder_exposes_trainers_like_nnunet_looks_them_up():
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    folder = ext_trainer_folder()
    found = recursive_find_python_class(
        folder, "VisMAETrainer_2epochs", None, base_folder=folder, cleanup_imports_from_base_folder=True
    )
    assert found is variants.VisMAETrainer_2epochs
    assert (
        recursive_find_python_class(
            folder, "VisMAETrainer", None, base_folder=folder, cleanup_imports_from_base_folder=True
        )
        is VisMAETrainer
    )


def test_ext_folder_serves_every_trainer_of_the_one_list_and_its_variants():
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    from nnunetv2_vismae.training import TRAINERS

    folder = ext_trainer_folder()

    def lookup(name):
        return recursive_find_python_class(
            folder, name, None, base_folder=folder, cleanup_imports_from_base_folder=True
        )

    for cls in TRAINERS:
        assert lookup(cls.__name__) is cls and variants.BASES[cls.__name__] is cls
        assert lookup(f"{cls.__name__}_labels10_seed1_2epochs_5iters") is getattr(
            variants, f"{cls.__name__}_labels10_seed1_2epochs_5iters"
        )
    assert issubclass(lookup("nnUNetTrainer_labels25"), nnUNetTrainer)
    assert lookup("nnUNetTrainer") is None and lookup("NotATrainer_5epochs") is None  # nnU-Net's own, and no trainer


class _PlotCounter:
    def __init__(self):
        self.plotted = 0

    def plot_progress_png(self, output_folder):
        self.plotted += 1


def test_progress_plot_at_most_once_a_minute_and_after_the_last_epoch():
    now = [0.0]
    trainer = SimpleNamespace(logger=_PlotCounter(), current_epoch=0, num_epochs=10)
    variants.throttle_progress_plot(trainer, interval_s=60, clock=lambda: now[0])
    plotted_after = []
    for epoch in range(10):  # epochs of 25 s
        trainer.current_epoch, before = epoch, trainer.logger.plotted
        trainer.logger.plot_progress_png("out")
        if trainer.logger.plotted > before:
            plotted_after.append(epoch)
        now[0] += 25.0
    assert plotted_after == [0, 3, 6, 9]


def test_every_variant_throttles_the_progress_plot(monkeypatch):
    monkeypatch.delenv(CPU_THREADS, raising=False)
    trainer = built_trainer(monkeypatch, CPU, variants.make_variant("nnUNetTrainer_labels10"))
    trainer.current_epoch, trainer.num_epochs = 0, 1000
    trainer.logger.plot_progress_png("out")
    trainer.logger.plot_progress_png("out")  # within the minute: skipped
    assert trainer.logger.plotted == ["out"]


def test_warmup_then_poly_schedule():
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = WarmupPolyLRScheduler(opt, 1e-3, max_steps=100, warmup_steps=10)
    lrs = []
    for epoch in range(100):
        sched.step(epoch)
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a < b for a, b in zip(lrs[:9], lrs[1:10]))
    assert lrs[10] == pytest.approx(1e-3) and all(a > b for a, b in zip(lrs[10:-1], lrs[11:]))
    assert lrs[-1] < 3e-5


def test_bf16_forward_keeps_state_dict_and_returns_fp32(monkeypatch):
    net = torch.nn.Sequential(torch.nn.Linear(4, 4))
    keys = list(net.state_dict())
    run_forward_in_bf16(net)
    assert list(net.state_dict()) == keys
    out = net(torch.randn(2, 4))
    assert out.dtype == torch.float32
    monkeypatch.setenv("nnUNet_vismae_cpu_bf16", "0")
    assert not cpu_bf16_enabled(torch.device("cpu"))
    monkeypatch.setenv("nnUNet_vismae_cpu_bf16", "1")
    assert cpu_bf16_enabled(torch.device("cpu")) and not cpu_bf16_enabled(torch.device("cuda"))


class _TrainerStub:
    """What VisMAETrainer.load_pretrained_encoder touches."""

    def __init__(self, network):
        self.network, self.log = network, []

    def print_to_log_file(self, *args, **kwargs):
        self.log.append(" ".join(map(str, args)))


def _tiny_checkpoint(tmp_path):
    from nnunetv2_vismae.architectures import SwinUNet
    from nnunetv2_vismae.checkpoint import save_encoder_checkpoint

    tiny = {"embed_dim": 12, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 2, 2], "window_size": 4}
    source = SwinUNet(1, 2, encoder=tiny).encoder
    path = tmp_path / "encoder.safetensors"
    digest = save_encoder_checkpoint(
        path,
        source.state_dict(),
        {"family": "swin", "encoder_config": source.config.to_json(), "normalization": {"scheme": "zscore"}},
    )
    return path, digest, source, SwinUNet(1, 2, encoder=tiny)


def test_trainer_loads_the_plans_checkpoint_completely(tmp_path):
    path, digest, source, network = _tiny_checkpoint(tmp_path)
    stub = _TrainerStub(network)
    VisMAETrainer.load_pretrained_encoder(stub, plans_reference(path))
    for name, tensor in source.state_dict().items():
        assert torch.equal(network.encoder.state_dict()[name], tensor)
    assert any("(100.0%)" in line for line in stub.log)


def test_trainer_refuses_a_replaced_checkpoint(tmp_path):
    from nnunetv2_vismae.checkpoint import CheckpointError, save_encoder_checkpoint

    path, digest, source, network = _tiny_checkpoint(tmp_path)
    reference = plans_reference(path)
    state = {k: v + 1 for k, v in source.state_dict().items()}
    save_encoder_checkpoint(
        path,
        state,
        {"family": "swin", "encoder_config": source.config.to_json(), "normalization": {"scheme": "zscore"}},
    )
    before = {k: v.clone() for k, v in network.state_dict().items()}
    with pytest.raises(CheckpointError):
        VisMAETrainer.load_pretrained_encoder(_TrainerStub(network), reference)
    assert all(torch.equal(before[k], v) for k, v in network.state_dict().items())


class _GroupsStub:
    """What parameter_groups / configure_optimizers touch."""

    def __init__(self, network, cls):
        self.network, self.weight_decay, self.layer_decay = network, 0.05, cls.layer_decay
        self.frozen_encoder, self.initial_lr, self.betas = cls.frozen_encoder, 1e-3, (0.9, 0.999)
        self.num_epochs, self.device, self.cls = 100, torch.device("cpu"), cls
        self.warmup_fraction = cls.warmup_fraction

    def parameter_groups(self):
        return self.cls.parameter_groups(self)

    def frozen_part(self):
        return self.cls.frozen_part(self)

    def stop_gradients_of_frozen_part(self):
        return self.cls.stop_gradients_of_frozen_part(self)


def _tiny_swinunet():
    from nnunetv2_vismae.architectures import SwinUNet

    return SwinUNet(
        1, 2, encoder={"embed_dim": 12, "depths": [1, 2, 1, 1], "num_heads": [1, 1, 2, 2], "window_size": 4}
    )


def test_layer_decay_scales_encoder_blocks_by_distance_from_the_decoder():
    from nnunetv2_vismae.training import VisMAETrainerLLRD

    stub = _GroupsStub(_tiny_swinunet(), VisMAETrainerLLRD)
    groups = stub.parameter_groups()
    scale_of = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    scales = {name: scale_of[id(p)] for name, p in stub.network.named_parameters()}
    assert scales["encoder.patch_embed.proj.weight"] == pytest.approx(0.75**6)
    assert scales["encoder.layers.3.blocks.0.attn.qkv.weight"] == pytest.approx(0.75)
    assert all(s == 1.0 for n, s in scales.items() if n.startswith("decoder."))
    counted = sum(p.numel() for g in groups for p in g["params"])
    assert counted == sum(p.numel() for p in stub.network.parameters())
    assert not groups[0]["encoder"]  # nnU-Net logs the lr of group 0: the decoder's


def test_fine_tuning_steps_with_torchs_fused_adamw():
    """The speed lever is ours to pull; that the fused kernel updates like the reference one is torch's to test."""
    stub = _GroupsStub(_tiny_swinunet(), VisMAETrainer)
    optimizer, _ = VisMAETrainer.configure_optimizers(stub)
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["fused"]


def test_frozen_encoder_is_left_out_of_the_optimizer():
    from nnunetv2_vismae.training import VisMAETrainerFrozen

    stub = _GroupsStub(_tiny_swinunet(), VisMAETrainerFrozen)
    optimizer, _ = VisMAETrainerFrozen.configure_optimizers(stub)
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert not any(id(p) in in_optimizer for p in stub.network.encoder.parameters())
    assert all(id(p) in in_optimizer for p in stub.network.decoder.parameters())


def test_sawtooth_keeps_the_encoder_still_then_warms_everything_up():
    from nnunetv2_vismae.optim.schedules import SawtoothLRScheduler

    params = [torch.nn.Parameter(torch.zeros(1)) for _ in range(2)]
    opt = torch.optim.AdamW([{"params": [params[0]], "encoder": True}, {"params": [params[1]]}], lr=1.0)
    sched = SawtoothLRScheduler(opt, 1e-3, max_steps=100, decoder_steps=5, warmup_steps=5)
    lrs = []
    for epoch in range(100):
        sched.step(epoch)
        lrs.append([g["lr"] for g in opt.param_groups])
    assert all(enc == 0 for enc, _ in lrs[:5]) and lrs[4][1] == pytest.approx(1e-3)
    assert lrs[5][0] == lrs[5][1] == pytest.approx(2e-4) and lrs[9][0] == pytest.approx(1e-3)
    assert all(a[0] > b[0] for a, b in zip(lrs[10:-1], lrs[11:]))
