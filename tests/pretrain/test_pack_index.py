"""A pack's own files as hostile or damaged input (issue 29, items 10, 13, 15): a malformed or
crafted pack.json is one sentence (never a traceback, a 16 GB allocation or a read outside the
pack), a corrupt shard record is packed again instead of stopping every rerun, and a full disk
while blosc2 writes is one sentence saying the rerun continues."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from pretrain.data import pack as pack_module
from pretrain.data.pack import PackSource
from pretrain.errors import PretrainUserError
from pretrain.pack_cli import main as pack_main


@pytest.fixture
def corpus(tmp_path):
    """Two small PNGs and a 3-slice volume."""
    import SimpleITK as sitk
    from PIL import Image

    folder = tmp_path / "corpus"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 255, (20, 24), dtype=np.uint8)).save(folder / name)
    sitk.WriteImage(sitk.GetImageFromArray(rng.normal(0, 1, (3, 16, 12)).astype(np.float32)), str(folder / "v.mha"))
    return folder


def pack(corpus, out) -> int:
    return pack_main(["-i", str(corpus), "-o", str(out), "-np", "1", "--axis", "all"])


def edited(index: dict, edit) -> dict:
    index = json.loads(json.dumps(index))
    edit(index)
    return index


def _set_count(index):
    index["files"][0][2][0][2] = 2_000_000_000


def _outside_name(index):
    index["files"][0][2][0][1] = "../../outside.b2nd"


def _absolute_name(index):
    index["files"][0][2][0][1] = "/etc/passwd"


def _files_not_a_list(index):
    index["files"] = {"a": 1}


def _num_items_text(index):
    index["num_items"] = "many"


def _normalization_without_scheme(index):
    del index["normalization"]["scheme"]


def _huge_shape(index):
    entry = index["files"][-1]
    entry[1] = [2_000_000_000, entry[1][1], entry[1][2]]
    entry[2] = [[0, entry[2][0][1], 2_000_000_000]]


@pytest.mark.parametrize(
    "edit",
    [
        _set_count,
        _outside_name,
        _absolute_name,
        _files_not_a_list,
        _num_items_text,
        _normalization_without_scheme,
        _huge_shape,
    ],
)
def test_a_malformed_or_crafted_index_is_one_sentence(corpus, tmp_path, edit):
    out = tmp_path / "pack"
    assert pack(corpus, out) == 0
    index = json.loads((out / "pack.json").read_text())
    (out / "pack.json").write_text(json.dumps(edited(index, edit)))
    advice = r"pack\.json is not a valid pack index \(.+\); run the nnUNetv2_vismae_pack command that made it again"
    with pytest.raises(PretrainUserError, match=advice):
        PackSource(str(out))
    assert pack(corpus, out) == 0 and len(PackSource(str(out))) == 2 + 3 + 16 + 12  # the advice works


def test_an_index_as_written_is_valid_in_every_setting(corpus, tmp_path):
    flags = ["-np", "1", "--norm", "ct", "--ct-clip", "-1", "1", "--ct-stats", "0", "2"]
    assert pack_main(["-i", str(corpus), "-o", str(tmp_path / "ct"), *flags]) == 0
    assert len(PackSource(str(tmp_path / "ct"))) == 1 + 1 + 3


def _truncated(path):
    path.write_text(path.read_text()[:10])


def _array_outside(path):
    record = json.loads(path.read_text())
    record["arrays"][0][1] = "../../../outside.b2nd"
    path.write_text(json.dumps(record))


def _array_gone(path):
    record = json.loads(path.read_text())
    os.remove(path.parent.parent.parent / record["arrays"][0][1])


@pytest.mark.parametrize("damage", [_truncated, _array_outside, _array_gone])
def test_a_corrupt_shard_record_is_packed_again(corpus, tmp_path, damage, monkeypatch, capsys):
    out = tmp_path / "pack"
    assert pack(corpus, out) == 0
    volume_key = pack_module.shard_key(str(corpus / "v.mha"))
    damage(out / pack_module.record_path("", volume_key))
    real, packed = pack_module.pack_file, []
    monkeypatch.setattr(pack_module, "pack_file", lambda *a: packed.append(os.path.basename(a[0])) or real(*a))
    assert pack(corpus, out) == 0, capsys.readouterr().err
    assert packed == ["v.mha"]  # only the damaged one
    assert pack(corpus, tmp_path / "fresh") == 0
    fresh, repaired = PackSource(str(tmp_path / "fresh")), PackSource(str(out))
    assert len(repaired) == len(fresh) == 2 + 3 + 16 + 12
    for i in range(len(fresh)):
        np.testing.assert_array_equal(repaired.load_slice(i), fresh.load_slice(i))


def test_an_unreadable_settings_file_is_one_sentence(corpus, tmp_path, capsys):
    out = tmp_path / "pack"
    assert pack(corpus, out) == 0
    (out / "settings.json").write_text('{"version": 1, "ax')
    assert pack(corpus, out) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "settings.json cannot be read" in err and "pack into a new -o" in err
    assert (out / "settings.json").read_text() == '{"version": 1, "ax'  # kept: it may be the user's


def test_a_full_disk_while_blosc2_writes_is_one_sentence(corpus, tmp_path, monkeypatch, capsys):
    import blosc2

    out = tmp_path / "pack"
    real_asarray, writes = blosc2.asarray, []

    def full_after_one(*args, **kwargs):  # what blosc2 raises when a write fails: no errno
        writes.append(kwargs["urlpath"])
        if len(writes) > 1:
            raise RuntimeError("Error while creating the NDArray")
        return real_asarray(*args, **kwargs)

    real_usage = shutil.disk_usage
    monkeypatch.setattr(blosc2, "asarray", full_after_one)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real_usage(p)._replace(free=0))
    assert pack(corpus, out) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # after tqdm's bar
    assert "Traceback" not in err and last.startswith("nnUNetv2_vismae_pack: error: Cannot write ")
    assert last.endswith(
        ".b2nd: No space left on device; what was saved before is intact: make room and rerun the same command."
    )
    assert len(list(out.glob("shards/*/*.json"))) == 1  # the first file's record is kept
    assert not list(out.glob("shards/*/.*"))  # no temporary left behind
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real_usage(p)._replace(free=1))
    assert pack(corpus, out) == 2
    assert "Cannot write" in (err := capsys.readouterr().err) and "blosc2's file writer failed" in err
    monkeypatch.setattr(blosc2, "asarray", real_asarray)
    assert pack(corpus, out) == 0
