"""Faults during pretraining: kill -9 then the same command resumes; NaN/Inf losses are skipped; a full
disk stops the run with one sentence and the rerun ends with the encoder of its state."""

from __future__ import annotations

import csv
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import safetensors.torch
import torch
from safetensors import SafetensorError

from nnunetv2_vismae.checkpoint import read_encoder_checkpoint, tensors_content_hash
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


@pytest.mark.slow  # the run is a new Python process, killed and started again
def test_kill_9_then_the_same_command_resumes_to_the_same_end(png_folder, tmp_path, capsys):
    flags = [*FAST, "-i", png_folder, "--steps", "6", "--save-every", "2", "--workers", "1"]
    out = str(tmp_path / "killed")
    command = [sys.executable, "-m", "pretrain.cli", "-o", out, *flags]
    env = dict(os.environ, OMP_NUM_THREADS="1")  # as in this process (single_thread): same arithmetic
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True
    )
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
    assert _log_steps(out) == [1, 2, 3, 4, 5, 6]  # no step lost or logged twice
    assert not [n for n in os.listdir(out) if n.startswith(".")]  # no temporary file left behind

    reference = Pretrainer(parse(["-o", str(tmp_path / "whole"), *flags]), setup_runtime("cpu")).setup()
    assert reference.train() == 0
    state = torch.load(os.path.join(out, "state.pt"), weights_only=True)
    assert state["step"] == 6 and state["data_position"] == reference.data_position  # data order
    assert state["scheduler"]["last_epoch"] == reference.scheduler.last_epoch  # schedule
    expected = reference.optimizer.state_dict()["state"]
    assert all(torch.equal(state["optimizer"]["state"][i]["exp_avg_sq"], expected[i]["exp_avg_sq"]) for i in expected)
    assert (
        read_encoder_checkpoint(os.path.join(out, "encoder.safetensors")).content_hash
        == read_encoder_checkpoint(tmp_path / "whole" / "encoder.safetensors").content_hash
    )


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
    trainer = Pretrainer(
        parse([*FAST, "-i", png_folder, "-o", str(out), "--steps", "3", "--save-every", "100"]), setup_runtime("cpu")
    ).setup()
    _poison_losses(trainer, {2, 3})
    snapshots = []
    step = trainer._optimizer_step

    def recording(loss, grad_norm):
        before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        stepped = step(loss, grad_norm)
        snapshots.append((stepped, all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())))
        return stepped

    trainer._optimizer_step = recording
    assert trainer.train() == 0
    assert snapshots == [(True, False), (False, True), (False, True), (True, False), (True, False)]
    assert "Step 2: the loss is nan; skipped this optimizer step (2 in a row" in capsys.readouterr().out
    state = torch.load(out / "state.pt", weights_only=True)
    assert state["step"] == 3 and state["skipped_steps"] == 2 and state["data_position"] == 5 * 2
    assert all(s["step"] == 3 for s in state["optimizer"]["state"].values())  # AdamW stepped 3 times
    assert _log_steps(out) == [1, 2, 3]


def test_too_many_bad_steps_in_a_row_stop_without_writing_them(png_folder, tmp_path):
    out = tmp_path / "run"
    trainer = Pretrainer(
        parse([*FAST, "-i", png_folder, "-o", str(out), "--steps", "20", "--save-every", "1", "--max-bad-steps", "3"]),
        setup_runtime("cpu"),
    ).setup()
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
    (out / "previews").mkdir(parents=True)
    (out / "sub").mkdir()
    (out / ".state.pt.vismae-tmp-0a1b2c3d.pt").write_bytes(b"half a state")  # atomic_path's temporary names
    (out / ".encoder.safetensors.vismae-tmp-0a1b2c3d.safetensors").write_bytes(b"half")
    (out / ".loss.png.vismae-tmp-3fa9c1d2.png").write_bytes(b"")  # matplotlib had not written yet
    (out / ".log.csv.vismae-tmp-0a1b2c3d.csv").write_bytes(b"step,loss")
    (out / "previews" / ".step_0000002.png.vismae-tmp-0a1b2c3d.png").write_bytes(b"")
    (out / ".notes.v1.tmp").write_text("notes")  # the user's own files, in -o and in a folder the run does not write
    (out / "sub" / ".thesis.v3.tmp").write_text("draft")
    (out / "sub" / ".loss.png.vismae-tmp-3fa9c1d2.png").write_text("a copy")
    (out / "log.csv").write_text("step,loss,lr,img_per_s,elapsed_s\n1,0.5,1e-3,9.0,1.0\n2,0.4,1e-3,9.0,2.0\n3,0.3")
    Pretrainer(parse([*FAST, "-i", png_folder, "-o", str(out)]), setup_runtime("cpu")).setup().release()
    manifests = [n for n in os.listdir(out) if n.startswith("manifest_")]
    assert sorted(os.listdir(out)) == sorted(["log.csv", "previews", "sub", ".notes.v1.tmp", *manifests])
    assert not os.listdir(out / "previews") and len(os.listdir(out / "sub")) == 2
    CsvLog(str(out / "log.csv"), resume_step=5).close()
    assert _log_steps(out) == [1, 2]


def _encoder_of_state(out) -> str:
    """The content hash of the encoder tensors in ``out/state.pt``."""
    model = torch.load(os.path.join(out, "state.pt"), weights_only=True)["model"]
    return tensors_content_hash({k.removeprefix("encoder."): v for k, v in model.items() if k.startswith("encoder.")})


def _one_line(stderr: str) -> str:
    """The error sentence: the one line of stderr besides tqdm's progress bar (and the blanks with which
    tqdm clears it for a line such as the feature ranks')."""
    lines = [line for line in stderr.strip().splitlines() if line.strip() and not line.startswith("MAE pretraining")]
    assert len(lines) == 1 and lines[0].startswith("nnUNetv2_vismae_pretrain: error: "), stderr
    return lines[0]


def test_full_disk_at_the_last_encoder_write_then_the_rerun_writes_it(png_folder, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    argv = [*FAST, "-i", png_folder, "-o", str(out), "--steps", "2", "--save-every", "100"]
    real_save_file = safetensors.torch.save_file

    def full_disk(tensors, path, *args, **kwargs):  # as safetensors reports ENOSPC
        if os.path.dirname(str(path)) == str(out):
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        return real_save_file(tensors, path, *args, **kwargs)

    with monkeypatch.context() as patched:
        patched.setattr(safetensors.torch, "save_file", full_disk)
        assert main(argv) == 2
    err = _one_line(capsys.readouterr().err)
    assert f"{out}/encoder.safetensors" in err and "No space left on device" in err, err
    assert torch.load(out / "state.pt", weights_only=True)["step"] == 2 and not (out / "encoder.safetensors").exists()

    assert main(argv) == 0  # the same command, space freed: the state is finished, the encoder was missing
    printed = capsys.readouterr().out
    assert f"Wrote {out}/encoder.safetensors again from {out}/state.pt" in printed
    checkpoint = read_encoder_checkpoint(out / "encoder.safetensors")
    assert checkpoint.metadata["steps"] == 2 and checkpoint.content_hash == _encoder_of_state(out)


def test_an_encoder_older_than_the_state_is_rewritten_by_the_rerun(png_folder, tmp_path, capsys):
    out = tmp_path / "run"
    argv = [*FAST, "-i", png_folder, "-o", str(out), "--steps", "2", "--save-every", "1"]
    Pretrainer(parse(argv), setup_runtime("cpu")).setup().train(stop_after=1)
    step_1 = (out / "encoder.safetensors").read_bytes()
    assert main(argv) == 0
    (out / "encoder.safetensors").write_bytes(step_1)  # killed after state.pt of step 2, before its encoder
    assert main(argv) == 0
    assert "again from" in capsys.readouterr().out
    checkpoint = read_encoder_checkpoint(out / "encoder.safetensors")
    assert checkpoint.metadata["steps"] == 2 and checkpoint.content_hash == _encoder_of_state(out)


def test_a_finished_run_verifies_its_encoder_before_it_reports_success(png_folder, tmp_path, monkeypatch):
    trainer = Pretrainer(
        parse([*FAST, "-i", png_folder, "-o", str(tmp_path / "run"), "--steps", "1"]), setup_runtime("cpu")
    ).setup()
    # a write that 'succeeds' and leaves nothing
    monkeypatch.setattr(trainer.checkpoints, "write_encoder", lambda *args: None)
    with pytest.raises(PretrainUserError, match=r"encoder.safetensors does not read back as the encoder of step 1"):
        trainer.train()


def test_full_disk_while_saving_the_state_keeps_the_last_state(png_folder, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    argv = [*FAST, "-i", png_folder, "-o", str(out), "--steps", "2", "--save-every", "1"]
    real_save, saves = torch.save, []

    def full_disk(obj, f, *args, **kwargs):  # torch's zip writer on a full disk: a RuntimeError, no errno
        if ".state.pt." in str(f):
            saves.append(f)
            if len(saves) == 2:
                open(f, "wb").write(b"PK half a state")
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
        return real_save(obj, f, *args, **kwargs)

    with monkeypatch.context() as patched:
        patched.setattr(torch, "save", full_disk)
        patched.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(total=1 << 30, used=1 << 30, free=0))
        assert main(argv) == 2
    err = _one_line(capsys.readouterr().err)
    assert err.endswith(
        f"Cannot write {out}/state.pt: No space left on device; what was saved before is intact: "
        "make room and rerun the same command."
    ), err
    assert torch.load(out / "state.pt", weights_only=True)["step"] == 1
    assert not [n for n in os.listdir(out) if n.startswith(".")]  # no temporary, no lock left
    assert main(argv) == 0
    assert read_encoder_checkpoint(out / "encoder.safetensors").content_hash == _encoder_of_state(out)
