"""The training loop: outputs, checkpoint round trip, resume, signals, CLI errors."""

from __future__ import annotations

import csv
import math
import os
import signal

import pytest
import torch

from tests.pretrain.helpers import TINY, parse
from pretrain.cli import main
from pretrain.runtime import setup_runtime
from pretrain.train import Pretrainer


def run(argv, stop_after=None, before_train=None):
    trainer = Pretrainer(parse(argv), setup_runtime("cpu")).setup()
    if before_train:
        before_train(trainer)
    code = trainer.train(stop_after=stop_after)
    return trainer, code


def test_outputs_and_checkpoint_round_trip(png_folder, tmp_path):
    from nnunetv2_vismae.architectures.swin_unet import SwinUNet
    from nnunetv2_vismae.checkpoint import load_encoder_into, read_encoder_checkpoint

    out = str(tmp_path / "run")
    trainer, code = run(
        [*TINY, "-i", png_folder, "-o", out, "--steps", "3", "--save-every", "2", "--preview-every", "3"]
    )
    assert code == 0
    for name in ("encoder.safetensors", "state.pt", "log.csv", "loss.png", "previews/step_0000003.png"):
        assert os.path.isfile(os.path.join(out, name)), name
    with open(os.path.join(out, "log.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2, 3] and all(float(r["img_per_s"]) > 0 for r in rows)

    ckpt = read_encoder_checkpoint(os.path.join(out, "encoder.safetensors"))
    trained = trainer.model.encoder.state_dict()
    assert set(ckpt.tensors) == set(trained)
    assert all(torch.equal(ckpt.tensors[k], trained[k].cpu()) for k in trained)  # bit for bit
    meta = ckpt.metadata
    assert meta["family"] == "swin" and meta["steps"] == 3 and meta["final_loss"] == pytest.approx(trainer.last_loss)
    assert meta["encoder_config"]["depths"] == [1, 1] and meta["mask"]["block_pixels"] == 8
    assert meta["normalization"]["scheme"] == "zscore" and meta["data_sources"]["sources"][0]["num_files"] == 4

    network = SwinUNet(1, 3, encoder={k: v for k, v in meta["encoder_config"].items() if k != "in_channels"})
    assert load_encoder_into(network, ckpt, log=lambda *a, **k: None).fraction_loaded == 1.0
    state = torch.load(os.path.join(out, "state.pt"), weights_only=True)
    assert state["step"] == 3 and state["data_position"] == 3 * 2


def test_resume_continues_like_an_uninterrupted_run(png_folder, tmp_path):
    flags = ["-i", png_folder, "--steps", "4", "--save-every", "100", *TINY]
    full, _ = run(["-o", str(tmp_path / "full"), *flags])

    first, _ = run(["-o", str(tmp_path / "split"), *flags], stop_after=2)
    assert first.step == 2
    resumed = Pretrainer(parse(["-o", str(tmp_path / "split"), *flags]), setup_runtime("cpu")).setup()
    assert resumed.step == 2 and resumed.data_position == 4
    assert resumed.scheduler.last_epoch == 2
    saved = first.optimizer.state_dict()["state"]
    restored = resumed.optimizer.state_dict()["state"]
    assert all(torch.equal(saved[i]["exp_avg"], restored[i]["exp_avg"]) for i in saved)
    resumed.train()

    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    full_opt, res_opt = full.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert all(torch.equal(full_opt[i]["exp_avg_sq"], res_opt[i]["exp_avg_sq"]) for i in full_opt)
    with open(tmp_path / "split" / "log.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [1, 2, 3, 4]


def test_a_state_written_before_newer_encoder_config_entries_resumes(png_folder, tmp_path):
    """Entries added to the encoder config later (the shift rule, the final norm) read as their
    defaults, which mean what an older run computed: its state resumes instead of being refused."""
    out, flags = tmp_path / "run", ["-i", png_folder, "--steps", "3", "--save-every", "100", *TINY]
    run(["-o", str(out), *flags], stop_after=2)
    state = torch.load(out / "state.pt", weights_only=True)
    for entry in ("shift_single_window_stages", "final_norm"):
        del state["settings"]["encoder_config"][entry]
    torch.save(state, out / "state.pt")
    resumed, code = run(["-o", str(out), *flags])
    assert code == 0 and resumed.step == 3


def test_sigterm_saves_state_stops_and_leaves_no_workers(png_folder, tmp_path):
    import multiprocessing

    out = str(tmp_path / "run")

    def send_sigterm_on_first_mask(trainer):
        make_mask = trainer.family.make_mask

        def make_mask_then_signal(imgs, generator):
            if trainer.step == 0:
                os.kill(os.getpid(), signal.SIGTERM)  # a real signal, inside the loop
            return make_mask(imgs, generator)

        trainer.family.make_mask = make_mask_then_signal

    trainer, code = run(
        [*TINY, "-i", png_folder, "-o", out, "--steps", "50", "--save-every", "100", "--workers", "1"],
        before_train=send_sigterm_on_first_mask,
    )
    assert code == 128 + signal.SIGTERM and trainer.step == 1
    assert torch.load(os.path.join(out, "state.pt"), weights_only=True)["step"] == 1
    assert os.path.isfile(os.path.join(out, "encoder.safetensors"))
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
    assert not multiprocessing.active_children()  # data-loader workers shut down


def test_precision_auto_follows_native_bf16(monkeypatch):
    import nnunetv2_vismae.device as device
    from pretrain.runtime import Runtime

    cpu = Runtime(torch.device("cpu"))
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: False)
    assert cpu.resolve_precision("auto") == "fp32" and cpu.resolve_precision("bf16") == "bf16"
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: True)
    assert cpu.resolve_precision("auto") == "bf16" and cpu.resolve_precision("fp32") == "fp32"
    gpu = Runtime(torch.device("cuda", 0))
    monkeypatch.setattr(device, "cuda_has_native_bf16", lambda: True)
    assert gpu.resolve_precision("auto") == "bf16"
    monkeypatch.setattr(device, "cuda_has_native_bf16", lambda: False)  # before Ampere bf16 is only emulated
    assert gpu.resolve_precision("auto") == "fp32"


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["-i", "/nonexistent/folder", "-o", "{out}"], "Input folder /nonexistent/folder does not exist"),
        (["-i", "{empty}", "-o", "{out}"], "contains no supported image files"),
        (["-o", "{out}"], "No data given"),
        (["-i", "{empty}", "-o", "{out}", "--steps", "0"], "--steps must be at least 1"),
        (["-i", "{empty}", "-o", "{out}", "--bogus"], "Unrecognized arguments: --bogus"),
        (["-d", "1", "-o", "{out}"], "nnUNet_preprocessed"),
        (["-i", "{pngs}", "-o", "{out}", "--norm", "ct"], "--norm ct needs --ct-clip"),
        (
            ["-i", "{pngs}", "-o", "{out}", "--patch-size", "36", "--workers", "0"],
            "multiple of the encoder's total stride",
        ),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(argv, expected, tmp_path, png_folder, capsys, monkeypatch):
    monkeypatch.delenv("nnUNet_preprocessed", raising=False)
    (tmp_path / "empty").mkdir()
    fill = {"out": str(tmp_path / "out"), "empty": str(tmp_path / "empty"), "pngs": png_folder}
    assert main([a.format(**fill) for a in argv] + ["-device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err and "Traceback" not in err, err


class _HostReads(torch.overrides.TorchFunctionMode):
    """Counts the tensor calls that make the host wait for the device (a value read back to Python)."""

    READS = {"item", "tolist", "__bool__", "__float__", "__int__", "__index__", "cpu", "numpy", "__array__"}

    def __init__(self):
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in self.READS:
            self.calls.append(func.__name__)
        return func(*args, **(kwargs or {}))


def _step_on_one_batch(png_folder, out, device: str):
    """A trainer (--accum 2) and endless copies of one batch on ``device``, as ``train_step`` takes them."""
    import itertools

    flags = ["-i", png_folder, "-o", out, "--accum", "2", "--precision", "fp32", "-device", device]
    trainer = Pretrainer(parse([*TINY, *flags]), setup_runtime(device)).setup()
    trainer.release()
    imgs, reports = next(iter(trainer.loader))
    trainer.model.train()
    return trainer, itertools.repeat((imgs.to(trainer.runtime.device), reports))


def test_a_training_step_reads_from_the_device_once(png_folder, tmp_path):
    """Loss, gradient norm and the votes of every micro-batch travel in one tensor, read once (the
    reads Python makes; on a GPU the next test also catches those inside torch)."""
    trainer, batches = _step_on_one_batch(png_folder, str(tmp_path / "run"), "cpu")
    with _HostReads() as reads:
        outcome = trainer.train_step(batches, torch.Generator())
    assert outcome.stepped and trainer.step == 1 and math.isfinite(trainer.last_loss)
    assert reads.calls == ["tolist"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_training_step_synchronizes_with_the_gpu_once(png_folder, tmp_path):
    import warnings

    trainer, batches = _step_on_one_batch(png_folder, str(tmp_path / "run"), "cuda")
    generator = torch.Generator(device=trainer.runtime.device)
    trainer.train_step(batches, generator)  # warm-up: cuDNN's autotuner synchronizes on new shapes
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.train_step(batches, generator)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = [str(w.message) for w in caught if "synchronizing" in str(w.message)]
    assert len(syncs) == 1, syncs


def test_cuda_gets_tf32_matmuls_and_the_cudnn_autotuner():
    from nnunetv2_vismae.device import configure_cuda_speed

    before = torch.get_float32_matmul_precision(), torch.backends.cudnn.benchmark
    try:
        configure_cuda_speed(torch.device("cpu"))
        assert (torch.get_float32_matmul_precision(), torch.backends.cudnn.benchmark) == before
        configure_cuda_speed(torch.device("cuda", 0))  # sets process-wide switches only: no GPU needed
        assert torch.get_float32_matmul_precision() == "high" and torch.backends.cudnn.benchmark
    finally:
        torch.set_float32_matmul_precision(before[0])
        torch.backends.cudnn.benchmark = before[1]
