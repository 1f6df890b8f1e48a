"""nnUNetv2_vismae_pack and pretraining from a pack: slices equal the raw reader's, a killed pack
resumes to the same pack, unusable files are counted by reason, -np 2 equals -np 1, and pretraining
from a pack (mixed with a folder) resumes exactly."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from nnunetv2_vismae.io.lock import claim_output_folder
from nnunetv2_vismae.io.normalization import Normalization
from pretrain.data.files import FileSource
from pretrain.data.mixture import PatchDataset
from pretrain.data import pack as pack_module
from pretrain.data.files import discover_files
from pretrain.data.pack import PackSource
from pretrain.errors import PretrainUserError
from pretrain.pack_cli import main as pack_main
from tests.pretrain.helpers import TINY, parse
from tests.pretrain.reliability_helpers import EXPECTED, write_messy_corpus
from tests.pretrain.test_pretrain_loop import run
from tests.pretrain.test_reliability_corpus import deny_read  # noqa: F401  (a fixture)


@pytest.fixture
def corpus(tmp_path):
    """Two NIfTI volumes (float and int16) and two PNGs (gray, RGB), some smaller than a 32-pixel patch."""
    import SimpleITK as sitk
    from PIL import Image

    folder = tmp_path / "corpus"
    folder.mkdir()
    rng = np.random.default_rng(0)
    sitk.WriteImage(
        sitk.GetImageFromArray(rng.normal(40, 30, (4, 20, 36)).astype(np.float32)), str(folder / "a.nii.gz")
    )
    sitk.WriteImage(sitk.GetImageFromArray(rng.integers(-80, 90, (3, 40, 22)).astype(np.int16)), str(folder / "b.nii"))
    Image.fromarray(rng.integers(0, 255, (30, 26), dtype=np.uint8)).save(folder / "gray.png")
    Image.fromarray(rng.integers(0, 255, (24, 44, 3), dtype=np.uint8)).save(folder / "rgb.png")
    return folder


def pack(inputs, out, *flags, np_=1) -> int:
    return pack_main(["-i", *map(str, inputs), "-o", str(out), "-np", str(np_), *flags])


def contents(folder) -> tuple[dict, dict[str, np.ndarray]]:
    """A pack's index and every slice array it names."""
    import blosc2

    index = json.loads((folder / "pack.json").read_text())
    names = [name for _, _, arrays in index["files"] for _, name, _ in arrays]
    return index, {name: blosc2.open(str(folder / name))[:] for name in names}


def assert_same_pack(a, b) -> None:
    (index_a, arrays_a), (index_b, arrays_b) = contents(a), contents(b)
    assert index_a == index_b and arrays_a.keys() == arrays_b.keys()
    assert all(np.array_equal(arrays_a[k], arrays_b[k]) for k in arrays_a)


@pytest.mark.parametrize(
    "flags, normalization",
    [(["--axis", "all"], Normalization()), (["--axis", "1", "--norm", "ct", "--ct-clip", "-50", "50"], None)],
)
def test_packed_slices_equal_the_readers_normalized_slices(corpus, tmp_path, flags, normalization, capsys):
    import blosc2

    assert pack([corpus], tmp_path / "pack", *flags) == 0
    assert "Packed" in capsys.readouterr().out
    axis = flags[1]
    normalization = normalization or Normalization("ct", (-50.0, 50.0))
    raw = FileSource("raw", discover_files([str(corpus)]), axis, normalization, cache_dir=str(tmp_path / "manifest"))
    packed = PackSource(str(tmp_path / "pack"))
    assert len(packed) == len(raw) and packed.files == raw.files and packed.num_items == 4 and not packed.skipped
    for i in range(len(raw)):
        expected = raw.load_slice(i).astype(np.float16).astype(np.float32)  # float16 is what a pack stores
        assert packed.origin(i) == raw.origin(i)
        np.testing.assert_array_equal(packed.load_slice(i), expected)
    # the data stream is the same function of the sample index
    from_raw, from_pack = PatchDataset([raw], 32, seed=3), PatchDataset([packed], 32, seed=3)
    for k in range(8):
        np.testing.assert_array_equal(from_pack[k].numpy(), from_raw[k].numpy().astype(np.float16).astype(np.float32))
    one = blosc2.open(str(tmp_path / "pack" / packed.unit_arrays[0]))
    assert one.dtype == np.float16 and one.chunks == (1, *one.shape[1:])  # one slice, one chunk
    assert packed.summary()["normalization"] == normalization.to_json() and packed.summary()["type"] == "pack"


def test_a_killed_pack_resumes_to_the_same_pack(corpus, tmp_path, monkeypatch, capsys):
    real, calls = pack_module.pack_file, []

    def killed_after_two(*args):
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C, as a kill between two files
        calls.append(args[0])
        return real(*args)

    monkeypatch.setattr(pack_module, "pack_file", killed_after_two)
    out = tmp_path / "pack"
    assert pack([corpus], out) == 130
    assert "run the same command again to resume" in capsys.readouterr().err
    assert not (out / "pack.json").exists() and len(list(out.glob("shards/*/*.json"))) == 2
    shard_folder = next(out.glob("shards/*"))
    leftover = shard_folder / ".x_a0.b2nd.vismae-tmp-1a2b3c4d.b2nd"  # what kill -9 in the middle of a write leaves
    leftover.write_bytes(b"partial")

    monkeypatch.setattr(pack_module, "pack_file", lambda *args: calls.append(args[0]) or real(*args))
    assert pack([corpus], out) == 0
    assert len(calls) == 4 and len(set(calls)) == 4  # the rerun packed only the two files left
    assert not leftover.exists()
    assert pack([corpus], tmp_path / "fresh") == 0
    assert_same_pack(out, tmp_path / "fresh")


def test_unusable_files_are_counted_by_reason(tmp_path, deny_read, capsys):  # noqa: F811
    messy = write_messy_corpus(tmp_path / "messy", deny_read)
    assert pack([messy], tmp_path / "pack") == 0
    out = capsys.readouterr().out
    packed = PackSource(str(tmp_path / "pack"))
    unusable = {n: r for n, r in EXPECTED.items() if r is not None}
    assert {os.path.basename(p): r for p, r, _ in packed.skipped} == unusable
    assert packed.num_items == len(EXPECTED) and len(packed.files) == len(EXPECTED) - len(unusable)
    assert f"{len(unusable)} of {len(EXPECTED)} files" in out and "NaN or Inf pixels" in out
    # pretraining counts them as it counts a raw corpus's, from the pack alone
    from pretrain.data.unusable import UnusableFiles

    assert UnusableFiles.from_sources([packed], 0.1).exceeded()


def test_two_workers_make_the_same_pack(corpus, tmp_path):
    assert pack([corpus], tmp_path / "one", "--axis", "all") == 0
    assert pack([corpus], tmp_path / "two", "--axis", "all", np_=2) == 0
    assert_same_pack(tmp_path / "one", tmp_path / "two")


def test_one_writer_per_pack_and_one_kind_of_slices(corpus, tmp_path, capsys):
    out = tmp_path / "pack"
    with claim_output_folder(out, "nnUNetv2_vismae_pack"):
        assert pack([corpus], out) == 2
    assert "is in use by nnUNetv2_vismae_pack" in capsys.readouterr().err
    assert not out.exists()  # the refused run wrote nothing
    assert pack([corpus], out) == 0
    assert pack([corpus], out, "--axis", "2") == 2
    assert "was packed with other settings" in capsys.readouterr().err
    os.remove(out / "pack.json")
    with pytest.raises(PretrainUserError, match="is not a finished pack"):
        PackSource(str(out))


def test_pretraining_from_a_pack_mixed_with_a_folder_resumes_exactly(corpus, png_folder, tmp_path):
    assert pack([corpus], tmp_path / "pack", "--axis", "all") == 0
    flags = ["--pack", str(tmp_path / "pack"), "-i", png_folder, "--source-weights", "1", "3", "--steps", "4"]
    flags += ["--save-every", "100", *TINY]
    full, _ = run(["-o", str(tmp_path / "full"), *flags])
    assert [s.summary()["type"] for s in full.sources] == ["files", "pack"]
    assert list(full.dataset.probabilities) == [0.25, 0.75]  # weights in the order -i, --pack

    first, _ = run(["-o", str(tmp_path / "split"), *flags], stop_after=2)
    assert first.step == 2
    resumed, code = run(["-o", str(tmp_path / "split"), *flags])
    assert code == 0 and resumed.step == 4
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(PretrainUserError, match="one weight per source \\(2\\)"):
        parse(["-o", str(tmp_path / "x"), *flags[:4], "--source-weights", "1"])
