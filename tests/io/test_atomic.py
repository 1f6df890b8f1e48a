"""Atomic writes: all or nothing, the mode of a normal file, one sentence when the write fails,
and the leftovers of killed writers recognised."""

import errno
import json
import os
import shutil
import stat
from types import SimpleNamespace

import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from nnunetv2_vismae.io.atomic import WriteError, atomic_path, is_leftover, remove_leftovers, write_json_atomic


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "plans.json"
    write_json_atomic(target, {"version": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            with open(tmp, "w") as f:
                f.write('{"version": 2, "trunc')
            raise RuntimeError("killed mid-write")
    assert json.loads(target.read_text()) == {"version": 1}
    assert os.listdir(tmp_path) == ["plans.json"]


def test_temporary_keeps_the_suffix_and_lands_in_the_destination_folder(tmp_path):
    target = tmp_path / "sub" / "loss.png"
    with atomic_path(target, fsync=True) as tmp:
        assert os.path.dirname(tmp) == str(target.parent) and tmp.endswith(".png")
        open(tmp, "wb").write(b"png")
    assert target.read_bytes() == b"png"


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_have_the_mode_of_a_normal_new_file(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        write_json_atomic(tmp_path / "plans.json", {})
        with atomic_path(tmp_path / "state.pt") as tmp:
            torch.save({}, tmp)
        open(tmp_path / "normal.txt", "w").close()
    finally:
        os.umask(previous)
    for name in ("plans.json", "state.pt", "normal.txt"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == mode, name


@pytest.mark.parametrize(
    "failure, reason",
    [
        (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), "No space left on device"),
        (OSError(errno.EROFS, os.strerror(errno.EROFS)), "Read-only file system"),
        (
            SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)"),
            "No space left on device",
        ),
        (
            RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"),
            "torch's file writer failed ([enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534)",
        ),
    ],
)
def test_a_failed_write_is_one_sentence_naming_the_file_and_keeps_the_old_one(tmp_path, failure, reason):
    target = tmp_path / "encoder.safetensors"
    target.write_bytes(b"old")
    with pytest.raises(WriteError) as raised:
        with atomic_path(target) as tmp:
            open(tmp, "wb").write(b"half")
            raise failure
    assert str(raised.value) == f"Cannot write {target}: {reason}."
    assert raised.value.strerror == reason and isinstance(raised.value, OSError)
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["encoder.safetensors"]


def test_torch_writer_failure_on_a_full_disk_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(total=100, used=100, free=0))
    with pytest.raises(WriteError, match=r"state.pt: No space left on device\.$"):
        with atomic_path(tmp_path / "state.pt"):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")


def test_other_errors_inside_the_write_are_not_disguised(tmp_path):
    with pytest.raises(RuntimeError, match="a bug"):
        with atomic_path(tmp_path / "x.json"):
            raise RuntimeError("a bug")
    with pytest.raises(KeyError):
        with atomic_path(tmp_path / "x.json"):
            raise KeyError("a bug")
    assert not os.listdir(tmp_path)


def test_a_file_where_the_folder_should_be_is_a_write_error(tmp_path):
    (tmp_path / "out").write_text("a file")
    with pytest.raises(WriteError, match=rf"Cannot write {tmp_path}/out/plans.json: "):
        write_json_atomic(tmp_path / "out" / "plans.json", {})


def test_leftovers_of_killed_writers_are_removed_and_nothing_else(tmp_path):
    (tmp_path / "previews").mkdir()
    leftovers = [
        ".loss.png.vismae-tmp-3fa9c1d2.png",
        ".encoder.safetensors.vismae-tmp-0a1b2c3d.safetensors",
        ".README.vismae-tmp-ab12cd34.tmp",
        ".x.nii.gz.vismae-tmp-ff00ee11.gz",
    ]
    kept = [
        "loss.png",
        ".gitignore",
        ".hidden.v2.txt",
        ".nnunetv2_vismae.lock",
        ".notes.old.txt",
        ".notes.v1.tmp",  # a user's own names of the old pattern
        ".loss.png.3fa9c1d2.png",
        ".state.pt.vismae-tmp-3fa9.pt",  # the random part is exactly 8 hex digits
        ".state.pt.converting-12",
        "previews/.step_0000003.png.vismae-tmp-0a1b2c3d.png",  # a folder not named
    ]
    for name in leftovers + kept:
        (tmp_path / name).write_bytes(b"")
    with atomic_path(tmp_path / "loss.png") as tmp:  # the writer's own names are recognised
        assert is_leftover(os.path.basename(tmp))
        open(tmp, "wb").write(b"png")
    removed = remove_leftovers([tmp_path])
    assert sorted(removed) == sorted(str(tmp_path / n) for n in leftovers)
    assert all((tmp_path / n).exists() for n in kept)
    assert remove_leftovers([tmp_path / "previews"]) == [str(tmp_path / kept[-1])]


@pytest.mark.parametrize(
    "suffix, temporary_suffix", [(".safetensors", ".safetensors"), ("", ".tmp"), ("." + "s" * 240, ".tmp")]
)
def test_a_destination_name_of_the_longest_length_is_written(tmp_path, suffix, temporary_suffix):
    name_max = os.pathconf(tmp_path, "PC_NAME_MAX")
    target = tmp_path / ("é" * ((name_max - len(suffix)) // 2) + "x" * ((name_max - len(suffix)) % 2) + suffix)
    assert len(os.fsencode(target.name)) == name_max
    with atomic_path(target) as tmp:
        name = os.path.basename(tmp)
        assert len(os.fsencode(name)) <= name_max and is_leftover(name) and name.endswith(temporary_suffix)
        open(tmp, "wb").write(b"x")
    assert target.read_bytes() == b"x" and os.listdir(tmp_path) == [target.name]


def test_a_safetensors_file_has_the_mode_of_a_normal_new_file(tmp_path):
    previous = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "encoder.safetensors") as tmp:
            save_file({"w": torch.zeros(2)}, tmp)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.stat(tmp_path / "encoder.safetensors").st_mode) == 0o644
