"""One writer per output folder: a live holder refuses a second one, a killed one is taken over."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from nnunetv2_vismae.io.folders import OutputFolderError
from nnunetv2_vismae.io.lock import LOCK_FILE, FolderLock, claim_output_folder, flocked
from tests.reliability import LockHolder


@pytest.fixture
def holder(tmp_path):
    """The output folder ``tmp_path/out``, locked by another live process."""
    held = LockHolder(tmp_path / "out")
    yield held
    held.kill()


def _write_holder(folder, **record):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / LOCK_FILE).write_text(
        json.dumps({"command": "nnUNetv2_vismae_pretrain", "started": "2024-05-01T10:00:00", **record})
    )


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_second_process_is_refused_until_the_first_is_killed(holder, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(OutputFolderError) as refused:
        claim_output_folder(out, "nnUNetv2_vismae_pretrain")
    message = str(refused.value)
    assert message.startswith(
        f"Output folder {out} is in use by nnUNetv2_vismae_pretrain (pid {holder.pid} on host "
        f"{socket.gethostname()}, started "
    )
    assert message.endswith(f"(if no such process runs, delete {out / LOCK_FILE}).") and "\n" not in message
    holder.kill()
    lock = claim_output_folder(out, "nnUNetv2_vismae_pretrain")  # the killed holder's lock is stale
    assert json.loads((out / LOCK_FILE).read_text())["pid"] == os.getpid()
    lock.release()
    assert not (out / LOCK_FILE).exists()


def test_a_lock_of_a_dead_process_of_this_host_is_taken_over(tmp_path):
    out = tmp_path / "out"
    _write_holder(out, pid=_dead_pid(), host=socket.gethostname())
    with FolderLock(out, "nnUNetv2_vismae_classify train"):
        assert json.loads((out / LOCK_FILE).read_text())["command"] == "nnUNetv2_vismae_classify train"
    assert not (out / LOCK_FILE).exists()


def test_a_reused_pid_is_not_mistaken_for_the_holder(tmp_path):
    out = tmp_path / "out"
    _write_holder(out, pid=os.getpid(), host=socket.gethostname(), process_start="1")  # not this process' start
    claim_output_folder(out, "nnUNetv2_vismae_pretrain").release()


def test_a_live_lock_of_this_process_is_refused_too(tmp_path):
    out = tmp_path / "out"
    with claim_output_folder(out, "nnUNetv2_vismae_pretrain"):
        with pytest.raises(OutputFolderError, match=rf"in use by nnUNetv2_vismae_pretrain \(pid {os.getpid()} "):
            claim_output_folder(out, "nnUNetv2_vismae_pretrain")
    claim_output_folder(out, "nnUNetv2_vismae_pretrain").release()  # released: free again


def test_a_lock_from_another_host_says_how_to_clear_it(tmp_path):
    out = tmp_path / "out"
    _write_holder(out, pid=4242, host="gpu-node-7")
    with pytest.raises(OutputFolderError) as refused:
        claim_output_folder(out, "nnUNetv2_vismae_pretrain")
    assert str(refused.value) == (
        f"Output folder {out} is in use by nnUNetv2_vismae_pretrain (pid 4242 on host gpu-node-7, started "
        f"2024-05-01T10:00:00), which cannot be checked from host {socket.gethostname()}; if no run is going on "
        f"there, delete {out / LOCK_FILE} and rerun."
    )
    (out / LOCK_FILE).unlink()  # as the sentence says
    claim_output_folder(out, "nnUNetv2_vismae_pretrain").release()


def test_release_leaves_a_lock_that_is_not_its_own(tmp_path):
    out = tmp_path / "out"
    lock = claim_output_folder(out, "nnUNetv2_vismae_pretrain")
    _write_holder(out, pid=4242, host="gpu-node-7")  # someone cleared ours and another run took the folder
    lock.release()
    assert json.loads((out / LOCK_FILE).read_text())["host"] == "gpu-node-7"


def test_a_folder_the_claim_created_is_removed_again_when_nothing_was_written(tmp_path):
    claim_output_folder(tmp_path / "new", "nnUNetv2_vismae_classify train").release()  # e.g. a bad CSV row
    assert not (tmp_path / "new").exists()
    with claim_output_folder(tmp_path / "used", "nnUNetv2_vismae_classify train"):
        (tmp_path / "used" / "split.json").write_text("{}")
    assert os.listdir(tmp_path / "used") == ["split.json"]
    (tmp_path / "mine").mkdir()
    claim_output_folder(tmp_path / "mine", "nnUNetv2_vismae_classify train").release()
    assert (tmp_path / "mine").is_dir()  # the user's own folder stays


@pytest.mark.parametrize("name, create", [("locks/run.lock", True), (".", False)])  # a file made with its folder
def test_flocked_refuses_a_second_holder_that_does_not_wait_and_frees_on_exit(tmp_path, name, create):
    path = tmp_path / name
    with flocked(path, create=create) as held:
        assert held
        with flocked(path, wait=False) as second:
            assert not second
    with flocked(path, wait=False) as again:
        assert again


def test_the_claim_removes_leftovers_only_in_the_folders_the_command_writes(tmp_path):
    out = tmp_path / "out"
    for sub in ("sub", "previews", "shards/0a", "shards/mine"):
        (out / sub).mkdir(parents=True)
    users = [
        ".notes.v1.tmp",
        "sub/.thesis.v3.tmp",
        "sub/.loss.png.vismae-tmp-0a1b2c3d.png",
        "shards/mine/.x.png.vismae-tmp-0a1b2c3d.png",
    ]
    ours = [".loss.png.vismae-tmp-0a1b2c3d.png", "previews/.step_7.png.vismae-tmp-0a1b2c3d.png"]
    ours.append("shards/0a/.0a1.json.vismae-tmp-0a1b2c3d.json")
    for name in users + ours:
        (out / name).write_text("notes")
    claim_output_folder(out, "nnUNetv2_vismae_pretrain", ("previews", "shards/[0-9a-f][0-9a-f]")).release()
    assert all((out / name).read_text() == "notes" for name in users)
    assert not any((out / name).exists() for name in ours)
