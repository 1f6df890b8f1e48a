"""Faults during pretraining: kill -9 then the same command resumes; NaN/Inf losses are skipped."""
from __future__ import annotations

import csv
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from nnunetv2_vismae.checkpoint import read_encoder_checkpoint
from pretrain.cli import main
from pretrain.errors import PretrainUserError
from pretrain.runtime import setup_runtime
from pretrain.train import Pretrainer
from tests.pretrain.helpers import TINY, parse
from tests.pretrain.reliability_helpers import single_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("single_thread")
FAST = [*TINY, "--precision", "fp32"]


def _log_steps(out) -> list[int]:
    path = os.path.join(out, "log.csv")
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [int(r["step"]) for r in csv.DictReader(f) if r["step"].isdigit()]


def test_kill_9_then_the_same_command_resumes_to_the_same_end(png_folder, tmp_path, capsys):
    flags = [*FAST, "-i", png_folder, "--steps", "6", "--save-every", "2", "--workers", "1"]
    out = str(tmp_path / "killed")
    command = [sys.executable, "-m", "pretrain.cli", "-o", out, *flags]
    env = dict(os.environ, OMP_NUM_THREADS="1")  # as in this process (single_thread): same arithmetic
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                               start_new_session=True)
    try:
        deadline = time.time() + 240
        while len(_log_steps(out)) < 3 and process.poll() is None and time.time() < deadline:
            time.sleep(0.02)  # past the first save (step 2), inside the next stretch of unsaved steps
        assert process.poll() is None, "the run ended before it could be killed"
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # its data-loader worker, if still there
        except ProcessLookupError:
            pass
    killed_at = torch.load(os.path.join(out, "state.pt"), weights_only=True)["step"]
    assert 2 <= killed_at < 6

    # the same command again; in this process, to spare a second interpreter start (~5 s of imports)
    assert main(command[3:]) == 0
    assert f"Resuming from {out}/state.pt at step {killed_at}." in capsys.readouterr().out
    assert _log_steps(out) == [1, 2, 3, 4, 5, 6]                       # no step lost or logged twice
    assert not [n for n in os.listdir(out) if n.startswith(".")]       # no temporary file left behind

    reference = Pretrainer(parse(["-o", str(tmp_path / "whole"), *flags]), setup_runtime("cpu")).setup()
    assert reference.train() == 0
    state = torch.load(os.path.join(out, "state.pt"), weights_only=True)
    assert state["step"] == 6 and state["data_position"] == reference.data_position          # data order
    assert state["scheduler"]["last_epoch"] == reference.scheduler.last_epoch                  # schedule
    expected = reference.optimizer.state_dict()["state"]
    assert all(torch.equal(state["optimizer"]["state"][i]["exp_avg_sq"], expected[i]["exp_avg_sq"]) for i in expected)
    assert (read_encoder_checkpoint(os.path.join(out, "encoder.safetensors")).content_hash
            == read_encoder_checkpoint(tmp_path / "whole" / "encoder.safetensors").content_hash)


def _poison_losses(trainer, attempts: set[int]):
    """Make the forward pass return a NaN loss on the given attempts (1-based, skipped ones included)."""
    forward, count = trainer.model.forward, [0]

    def poisoned(imgs, mask):
        count[0] += 1
        loss, pred = forward(imgs, mask)
        return (loss * math.nan, pred) if count[0] in attempts else (loss, pred)
    trainer.model.forward = poisoned


def test_nan_losses_are_skipped_without_touching_weights(png_folder, tmp_path, capsys):
    out = tmp_path / "run"
    trainer = Pretrainer(parse([*FAST, "-i", png_folder, "-o", str(out), "--steps", "3", "--save-every", "100"]),
                         setup_runtime("cpu")).setup()
    _poison_losses(trainer, {2, 3})
    snapshots = []
    step = trainer._optimizer_step

    def recording(loss):
        before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        stepped = step(loss)
        snapshots.append((stepped, all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())))
        return stepped
    trainer._optimizer_step = recording
    assert trainer.train() == 0
    assert snapshots == [(True, False), (False, True), (False, True), (True, False), (True, False)]
    assert "Step 2: the loss is nan; skipped this optimizer step (2 in a row" in capsys.readouterr().out
    state = torch.load(out / "state.pt", weights_only=True)
    assert state["step"] == 3 and state["skipped_steps"] == 2 and state["data_position"] == 5 * 2
    assert all(s["step"] == 3 for s in state["optimizer"]["state"].values())   # AdamW stepped 3 times
    assert _log_steps(out) == [1, 2, 3]


def test_too_many_bad_steps_in_a_row_stop_without_writing_them(png_folder, tmp_path):
    out = tmp_path / "run"
    trainer = Pretrainer(parse([*FAST, "-i", png_folder, "-o", str(out), "--steps", "20", "--save-every", "1",
                                "--max-bad-steps", "3"]), setup_runtime("cpu")).setup()
    _poison_losses(trainer, set(range(2, 100)))
    with pytest.raises(PretrainUserError, match=r"3 steps in a row had a non-finite loss .*at step 2\).*intact"):
        trainer.train()
    state = torch.load(out / "state.pt", weights_only=True)
    assert state["step"] == 1 and all(torch.isfinite(v).all() for v in state["model"].values())
    assert read_encoder_checkpoint(out / "encoder.safetensors").metadata["steps"] == 1


def test_non_finite_weights_are_never_saved(png_folder, tmp_path):
    out = tmp_path / "run"
    trainer = Pretrainer(parse([*FAST, "-i", png_folder, "-o", str(out), "--steps", "2"]), setup_runtime("cpu")).setup()
    with torch.no_grad():
        next(trainer.model.parameters()).view(-1)[0] = math.inf
    with pytest.raises(PretrainUserError, match="no longer finite .* nothing was written"):
        trainer.save()
    assert not os.listdir(out) or not (out / "state.pt").exists()


def test_leftovers_of_a_killed_write_are_removed_and_a_cut_log_line_dropped(png_folder, tmp_path):
    from pretrain.monitor import CsvLog

    out = tmp_path / "run"
    out.mkdir()
    (out / ".state.pt.k2j4.pt").write_bytes(b"half a state")            # atomic_path's temporary names
    (out / ".encoder.safetensors.x9.safetensors").write_bytes(b"half")
    (out / "log.csv").write_text("step,loss,lr,img_per_s,elapsed_s\n1,0.5,1e-3,9.0,1.0\n2,0.4,1e-3,9.0,2.0\n3,0.3")
    Pretrainer(parse([*FAST, "-i", png_folder, "-o", str(out)]), setup_runtime("cpu")).setup()
    assert sorted(os.listdir(out)) == ["log.csv"] + sorted(n for n in os.listdir(out) if n.startswith("manifest_"))
    CsvLog(str(out / "log.csv"), resume_step=5).close()
    assert _log_steps(out) == [1, 2]
