"""Messy corpora: each kind of bad file is skipped and counted by reason, never crashing a worker."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from nnunetv2_vismae.io.normalization import Normalization
from pretrain.data.files import FileSource
from pretrain.data.mixture import PatchDataset
from pretrain.data.files import discover_files
from pretrain.data.mixture import MAX_DRAWS
from pretrain.data.unusable import UnusableFiles
from pretrain.errors import PretrainUserError
from tests.pretrain.helpers import TINY, parse
from tests.pretrain.reliability_helpers import AT_MANIFEST, EXPECTED, single_thread, write_messy_corpus  # noqa: F401

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def deny_read(monkeypatch):
    """Make a file unreadable: chmod 000, or (as root, who reads anything) deny it in os.access."""

    def deny(path):
        os.chmod(path, 0)
        if os.geteuid() == 0:
            real = os.access
            monkeypatch.setattr(
                os,
                "access",
                lambda p, mode, *a, **k: False if str(p) == str(path) and mode & os.R_OK else real(p, mode, *a, **k),
            )

    return deny


@pytest.fixture
def corpus(tmp_path, deny_read):
    return write_messy_corpus(tmp_path / "messy", deny_read)


def _name(path):
    return os.path.basename(path)


def test_manifest_skips_header_level_problems_by_reason(corpus, tmp_path):
    source = FileSource("messy", discover_files([str(corpus)]), cache_dir=str(tmp_path / "out"))
    skipped = {_name(p): reason for p, reason, _ in source.skipped}
    assert skipped == {n: r for n, r in EXPECTED.items() if r in AT_MANIFEST}
    assert source.num_items == len(EXPECTED)
    shapes = {_name(f): s for f, s in zip(source.files, source.shapes)}
    assert shapes["pages.tif"] == (3, 40, 44) and shapes["vol.nii.gz"] == (4, 40, 44)  # 3D files give slices
    assert shapes["rgba.png"] == (1, 40, 44) and shapes["ct.dcm"] == (1, 20, 30)
    with open(source.manifest_path) as f:  # reasons are cached with the manifest
        assert {_name(p) for p, _, _ in json.load(f)["skipped"]} == set(skipped)


def test_load_time_problems_are_replaced_deterministically_and_reported(corpus, tmp_path):
    source = FileSource("messy", discover_files([str(corpus)]), cache_dir=str(tmp_path / "out"))
    dataset = PatchDataset([source], patch_size=32, seed=1)
    found, patches = {}, []
    for k in range(60):  # enough draws to meet every file
        patch, report = dataset.sample(k)
        assert tuple(patch.shape) == (1, 32, 32) and np.isfinite(patch.numpy()).all()
        patches.append(patch)
        found.update({_name(p): reason for p, reason, _ in report})
    assert found == {n: r for n, r in EXPECTED.items() if r is not None and r not in AT_MANIFEST}
    details = {_name(p): d for k in range(60) for p, _, d in PatchDataset([source], 32, seed=1).sample(k)[1]}
    assert "High-Throughput JPEG 2000" in details["htj2k.dcm"] and details["nan.mha"] == "1 pixels"
    # a fresh process (no memory of bad files) draws exactly the same stream
    fresh = PatchDataset([source], patch_size=32, seed=1)
    for k in (59, 3, 17):
        assert np.array_equal(fresh.sample(k)[0].numpy(), patches[k].numpy())


def test_readable_variations_are_converted_not_skipped(corpus, tmp_path):
    from PIL import Image

    source = FileSource("messy", discover_files([str(corpus)]), cache_dir=str(tmp_path / "out"))
    first = {_name(f): int(source.offsets[u]) for u, f in enumerate(source.files[i] for i, _, _ in source.units)}
    rgba = np.asarray(Image.open(corpus / "rgba.png")).astype(np.float32)
    luminance = 0.299 * rgba[..., 0] + 0.587 * rgba[..., 1] + 0.114 * rgba[..., 2]  # alpha dropped
    np.testing.assert_allclose(source.load_slice(first["rgba.png"])[0], Normalization()(luminance), atol=1e-4)
    u16 = np.asarray(Image.open(corpus / "u16.png")).astype(np.float32)
    assert u16.max() > 255  # really 16-bit
    np.testing.assert_allclose(source.load_slice(first["u16.png"])[0], Normalization()(u16), atol=1e-4)
    assert source.load_slice(first["pages.tif"] + 2).shape == (1, 40, 44)  # third page


def test_unusable_share_and_summary():
    tally = UnusableFiles(total=20, max_share=0.1, announce=lambda _: None)
    tally.add_reports([json.dumps([["/a.png", "constant", "value 3"], ["/b.png", "empty", ""]]), ""])
    tally.add_reports([json.dumps([["/a.png", "constant", "value 3"]])])  # counted once
    assert (
        tally.describe() == "2 of 20 files (10.0%) are unusable: 1 constant image (one value everywhere), "
        "1 empty file (0 bytes)"
    )
    assert not tally.exceeded()
    tally.add_reports([json.dumps([["/c.png", "nonfinite", "1 pixels"]])])
    with pytest.raises(PretrainUserError, match=r"3 of 20 files \(15.0%\).*--max-unusable 0.1.*e.g. /a.png"):
        tally.check()


def _pretrain(argv):
    from pretrain.runtime import setup_runtime
    from pretrain.train import Pretrainer

    return Pretrainer(parse(argv), setup_runtime("cpu")).setup()


def test_run_skips_counts_and_lists_unusable_files(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    trainer = _pretrain(
        [
            *TINY,
            "-i",
            str(corpus),
            "-o",
            str(out),
            "--steps",
            "6",
            "--workers",
            "1",
            "--max-unusable",
            "0.9",
            "--precision",
            "fp32",
        ]
    )
    assert trainer.train() == 0
    text = capsys.readouterr().out
    assert "6 of 17 files (35.3%) are unusable" in text and "they are skipped" in text
    listed = json.loads((out / "unusable_files.json").read_text())
    reasons = {_name(e["path"]): (e["reason"], e["found_at"]) for e in listed["files"]}
    assert all(reasons[n] == (r, "manifest") for n, r in EXPECTED.items() if r in AT_MANIFEST)
    assert any(at == "load" for _, at in reasons.values())  # found by a data-loader worker
    from nnunetv2_vismae.checkpoint import read_encoder_checkpoint

    counts = read_encoder_checkpoint(out / "encoder.safetensors").metadata["data_sources"]["unusable_files"]
    assert counts == listed["by_reason"] and sum(counts.values()) == len(reasons)


def test_too_much_unusable_stops_before_anything_starts_and_lists_them_all(corpus, tmp_path):
    listing = tmp_path / "run" / "unusable_files.json"
    with pytest.raises(
        PretrainUserError,
        match=r"6 of 17 files .* more than --max-unusable 0.1 allows .*; all are "
        rf"listed in {listing}; remove or fix them",
    ):
        _pretrain([*TINY, "-i", str(corpus), "-o", str(tmp_path / "run")])
    assert not (tmp_path / "run" / "state.pt").exists()
    listed = {_name(e["path"]): e["reason"] for e in json.loads(listing.read_text())["files"]}
    assert listed == {n: r for n, r in EXPECTED.items() if r in AT_MANIFEST}  # the full list, not one example


def test_load_time_share_stops_the_run_with_a_sentence(tmp_path):
    from PIL import Image

    folder = tmp_path / "flat"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(folder / "good.png")
    for i in range(9):  # headers fine, pixels constant: found only when loaded
        Image.fromarray(np.full((40, 40), i, np.uint8)).save(folder / f"flat{i}.png")
    trainer = _pretrain(
        [*TINY, "-i", str(folder), "-o", str(tmp_path / "run"), "--steps", "50", "--max-unusable", "0.3"]
    )
    with pytest.raises(PretrainUserError, match=r"of 10 files .* constant image .* --max-unusable 0.3.*all are listed"):
        trainer.train()
    listed = json.loads((tmp_path / "run" / "unusable_files.json").read_text())
    assert listed["unusable"] == len(listed["files"]) >= 4 and {e["reason"] for e in listed["files"]} == {"constant"}
    assert all(_name(e["path"]).startswith("flat") for e in listed["files"])


def test_corpus_with_nothing_usable_at_load_stops_instead_of_spinning(tmp_path):
    from PIL import Image

    folder = tmp_path / "flat"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((40, 40), i, np.uint8)).save(folder / f"flat{i}.png")
    source = FileSource("flat", discover_files([str(folder)]), cache_dir=str(tmp_path / "o"))
    patch, report = PatchDataset([source], patch_size=32).sample(0)
    assert not patch.any() and report[-1][0] == "*exhausted*" and f"None of {MAX_DRAWS} slices" in report[-1][1]
    tally = UnusableFiles(3, max_share=1.0, announce=lambda _: None)
    tally.add_reports([json.dumps(report)])
    with pytest.raises(PretrainUserError, match="most of the corpus seems unusable"):
        tally.check()


def test_corpus_of_only_unusable_files_is_an_error_before_anything_starts(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    for i in range(3):
        (folder / f"zero{i}.png").write_bytes(b"")
    with pytest.raises(PretrainUserError, match=r"none of its 3 files can be used \(e.g. .*zero0.png: empty file"):
        FileSource("bad", discover_files([str(folder)]), cache_dir=str(tmp_path / "o"))


def _usable_png(path):
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 44), dtype=np.uint8)).save(path)


def test_nan_and_inf_in_nifti_are_counted_as_nonfinite(tmp_path):
    import SimpleITK as sitk

    folder = tmp_path / "nifti"
    folder.mkdir()
    _usable_png(folder / "good.png")
    volume = np.random.default_rng(1).normal(size=(2, 40, 44)).astype(np.float32)
    volume[1, :4, :] = np.nan  # 176 NaN pixels
    volume[0, 0, 0] = np.inf
    sitk.WriteImage(sitk.GetImageFromArray(volume), str(folder / "nan.nii.gz"))  # SimpleITK reads them as 0
    sitk.WriteImage(sitk.GetImageFromArray(np.full((2, 40, 44), np.nan, np.float32)), str(folder / "all_nan.nii"))
    source = FileSource("nifti", discover_files([str(folder)]), cache_dir=str(tmp_path / "out"))
    dataset, found = PatchDataset([source], 32, seed=1), {}
    for k in range(20):
        found.update({_name(p): (reason, detail) for p, reason, detail in dataset.sample(k)[1]})
    assert found == {"nan.nii.gz": ("nonfinite", "177 pixels"), "all_nan.nii": ("nonfinite", "3520 pixels")}


def test_dangling_links_and_link_loops_are_skipped_and_counted(tmp_path):
    folder = tmp_path / "links"
    folder.mkdir()
    _usable_png(folder / "good.png")
    os.symlink(folder / "gone.png", folder / "dangling.png")
    os.symlink(folder / "loop_b.png", folder / "loop_a.png")
    os.symlink(folder / "loop_a.png", folder / "loop_b.png")
    source = FileSource("links", discover_files([str(folder)]), cache_dir=str(tmp_path / "out"))
    assert [_name(f) for f in source.files] == ["good.png"]
    skipped = {_name(p): (reason, detail) for p, reason, detail in source.skipped}
    assert skipped == {
        "dangling.png": ("link", f"No such file or directory: points to {folder / 'gone.png'}"),
        "loop_a.png": ("link", f"Too many levels of symbolic links: points to {folder / 'loop_b.png'}"),
        "loop_b.png": ("link", f"Too many levels of symbolic links: points to {folder / 'loop_a.png'}"),
    }
    tally = UnusableFiles.from_sources([source], max_share=1.0, announce=lambda _: None)
    assert tally.describe() == "3 of 4 files (75.0%) are unusable: 3 symbolic link to nothing (dangling, or a loop)"
