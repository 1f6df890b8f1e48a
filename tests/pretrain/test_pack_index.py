"""A full disk while blosc2 writes a pack's slices (issue 29, item 13) is one sentence saying the
rerun continues, not two tracebacks."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

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
