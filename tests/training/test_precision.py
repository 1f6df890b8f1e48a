"""The fine-tuning trainers' precision, decided without a GPU: on CUDA bf16 autocast without GradScaler
where the GPU has native bf16, nnU-Net's fp16 autocast and GradScaler where it has not, TF32 for fp32
matmuls; on a CPU exactly what it was."""

from types import SimpleNamespace

import pytest
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunetv2_vismae import device as device_module
from nnunetv2_vismae.training import VisMAETrainer
from nnunetv2_vismae.training.cnn_trainers import nnUNetTrainerMAEScratch

CUDA, CPU = torch.device("cuda", 0), torch.device("cpu")
NNUNETS_SCALER = "nnU-Net's GradScaler"


@pytest.fixture
def tf32_calls(monkeypatch) -> list:
    """What torch.set_float32_matmul_precision was asked (not applied: the test process keeps its own)."""
    calls = []
    monkeypatch.setattr(torch, "set_float32_matmul_precision", calls.append)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", torch.backends.cudnn.benchmark)  # restored after
    return calls


def built_trainer(monkeypatch, device, cls=VisMAETrainer):
    """Our trainer's __init__ on top of nnU-Net's, reduced to what ours builds on: the device, the
    GradScaler nnU-Net makes for CUDA (none on CPU) and the logger (the variants throttle its plot)."""

    def nnunet_init(self, plans, configuration, fold, dataset_json, device):
        self.device, self.grad_scaler = device, NNUNETS_SCALER if device.type == "cuda" else None
        self.logger = SimpleNamespace(plotted=[])  # what the variants' throttled plot let through
        self.logger.plot_progress_png = self.logger.plotted.append

    monkeypatch.setattr(nnUNetTrainer, "__init__", nnunet_init)
    monkeypatch.setenv("nnUNet_results", "/nonexistent/results")
    return cls({}, "2d", 0, {}, device)


@pytest.mark.parametrize("major, native", [(9, True), (8, True), (7, False)])
def test_native_bf16_on_cuda_is_ampere_and_later_not_emulation(monkeypatch, major, native):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: SimpleNamespace(major=major))
    monkeypatch.setattr(torch.cuda, "_check_bf16_tensor_supported", lambda index: True)  # emulation works
    assert device_module.native_bf16(CUDA) is native
    assert device_module.bf16_autocast(CUDA) is native


def test_a_gpu_with_native_bf16_trains_in_bf16_without_grad_scaler(monkeypatch, tf32_calls):
    monkeypatch.setattr(device_module, "cuda_has_native_bf16", lambda: True)
    trainer = built_trainer(monkeypatch, CUDA)
    assert trainer.grad_scaler is None  # nnU-Net's train_step then steps the optimizer directly
    assert tf32_calls == ["high"]


def test_an_older_gpu_keeps_nnunets_fp16_and_grad_scaler(monkeypatch, tf32_calls):
    monkeypatch.setattr(device_module, "cuda_has_native_bf16", lambda: False)
    trainer = built_trainer(monkeypatch, CUDA)
    assert trainer.grad_scaler == NNUNETS_SCALER
    assert tf32_calls == ["high"]


def test_the_cnn_trainers_inherit_it(monkeypatch, tf32_calls):
    monkeypatch.setattr(device_module, "cuda_has_native_bf16", lambda: True)
    monkeypatch.setattr("nnunetv2_vismae.training.cnn_trainers.refuse_swin_plans", lambda *args: None)
    assert built_trainer(monkeypatch, CUDA, nnUNetTrainerMAEScratch).grad_scaler is None


@pytest.mark.parametrize("cpu_bf16", ["0", "1"])
def test_on_a_cpu_nothing_changes(monkeypatch, tf32_calls, cpu_bf16):
    monkeypatch.setenv("nnUNet_vismae_cpu_bf16", cpu_bf16)
    trainer = built_trainer(monkeypatch, CPU)
    assert trainer.grad_scaler is None and tf32_calls == []  # nnU-Net's own: fp32 step, no scaler
    assert device_module.bf16_autocast(CPU) is (cpu_bf16 == "1")  # the CPU switch, as before


@pytest.mark.parametrize(
    "device, native, patched, log",
    [(CUDA, True, True, "cuda bf16 autocast"), (CUDA, False, False, None), (CPU, False, False, None)],
)
def test_initialize_runs_the_forward_in_bf16_exactly_where_decided(monkeypatch, device, native, patched, log):
    monkeypatch.setattr(device_module, "cuda_has_native_bf16", lambda: native)
    monkeypatch.setenv("nnUNet_vismae_cpu_bf16", "0")
    network = torch.nn.Linear(2, 2)
    monkeypatch.setattr(nnUNetTrainer, "initialize", lambda self: setattr(self, "network", network))
    monkeypatch.setattr(VisMAETrainer, "pretrained_reference", property(lambda self: None))
    trainer = object.__new__(VisMAETrainer)
    trainer.device, lines = device, []
    trainer.print_to_log_file = lambda *args, **kwargs: lines.append(" ".join(map(str, args)))
    trainer.initialize()
    assert ("forward" in vars(network)) is patched  # the instance's forward wrapped in autocast
    assert any(log in line for line in lines) if log else not lines


def test_cpu_train_step_is_nnunets_own_in_fp32(monkeypatch):
    """On a CPU without the bf16 switch the step is nnU-Net's, unchanged: same loss and same update as
    the plain network trained by hand (forward, loss, backward, clip at 12, optimizer step)."""
    monkeypatch.setenv("nnUNet_vismae_cpu_bf16", "0")
    torch.manual_seed(0)
    network = torch.nn.Conv2d(1, 2, 3, padding=1)
    reference = torch.nn.Conv2d(1, 2, 3, padding=1)
    reference.load_state_dict(network.state_dict())
    trainer = built_trainer(monkeypatch, CPU)
    trainer.network, trainer.loss = network, torch.nn.CrossEntropyLoss()
    trainer.optimizer = torch.optim.SGD(network.parameters(), lr=0.1)
    batch = {"data": torch.randn(2, 1, 8, 8), "target": torch.randint(0, 2, (2, 8, 8))}
    loss = trainer.train_step(batch)["loss"]

    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)
    expected = torch.nn.CrossEntropyLoss()(reference(batch["data"]), batch["target"])
    expected.backward()
    torch.nn.utils.clip_grad_norm_(reference.parameters(), 12)
    optimizer.step()
    assert loss == pytest.approx(expected.item(), abs=0)
    for a, b in zip(network.parameters(), reference.parameters()):
        assert torch.equal(a, b)


def test_steps_are_timed_with_warm_ups_and_the_median_on_cuda_the_best_on_a_cpu():
    cuda, cpu = device_module.step_timing(CUDA), device_module.step_timing(CPU, cpu_repeats=2)
    assert (cuda.warmup, cuda.repeats, cuda.statistic) == (5, 20, "median")
    assert (cpu.warmup, cpu.repeats, cpu.statistic) == (1, 2, "best")
    assert cuda.summary([3.0, 1.0, 2.0, 9.0, 2.5]) == 2.5 and cpu.summary([3.0, 1.0, 2.0]) == 1.0


def test_the_bf16_forward_patched_after_nnunets_compile_runs_in_one_graph():
    """nnU-Net compiles the network in initialize(), ours then wraps its forward in autocast: the
    compiled module calls the wrapped forward, traced whole (CPU autocast here, CUDA's on a GPU)."""
    from nnunetv2_vismae.architectures import SwinUNet

    torch.manual_seed(0)
    network = SwinUNet(1, 2, encoder={"embed_dim": 12, "depths": [2, 2], "num_heads": [1, 2], "window_size": 4})
    network.eval()
    torch._dynamo.reset()
    compiled = torch.compile(network, backend="eager", fullgraph=True)  # what nnU-Net's initialize does
    device_module.run_forward_in_bf16(network, CPU)
    x = torch.randn(1, 1, 64, 64)
    out = compiled(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = network.forward.__wrapped__(x)
    assert out.dtype == torch.float32  # fp32 for nnU-Net's loss
    torch.testing.assert_close(out, expected.float())
