"""Tiny files that declare huge images (issue 29, item 8): refused from their headers before any
pixel is read, counted as unusable like a corrupt file; a pack whose worker dies fails with one
sentence instead of waiting forever; -np is capped at the cores."""

from __future__ import annotations

import gzip
import os
import threading

import numpy as np
import pytest

from pretrain import pack_cli
from pretrain.data import files as files_module
from pretrain.data import pack as pack_module
from pretrain.data.pack import PackSource
from pretrain.data.screening import Unusable, screen_header
from tests.pretrain.dying_worker import DIES_ON, die_on_one_file

METAIMAGE = "ObjectType = Image\nNDims = 3\nDimSize = {dims}\nElementType = MET_UCHAR\nElementDataFile = {data}\n"


def write_png(path) -> None:
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 26), dtype=np.uint8)).save(path)


def write_hostile_corpus(folder) -> dict[str, str]:
    """The files of issue 29's tries (and relatives), each small; name -> the reason it is refused."""
    folder.mkdir()
    (folder / "zero.mha").write_text(METAIMAGE.format(dims="4000 4000 200", data="/dev/zero"))  # 105 bytes
    (folder / "up.mhd").write_text(METAIMAGE.format(dims="4 4 4", data="../outside.raw"))
    (folder.parent / "outside.raw").write_bytes(bytes(64))
    os.symlink("/dev/zero", folder / "link.raw")
    (folder / "link.mhd").write_text(METAIMAGE.format(dims="4 4 4", data="link.raw"))
    (folder / "abs.nhdr").write_text(
        f"NRRD0004\ntype: uchar\ndimension: 2\nsizes: 8 8\nencoding: raw\ndata file: {folder.parent / 'outside.raw'}\n"
    )
    (folder / "short.raw").write_bytes(bytes(10))
    (folder / "short.mhd").write_text(METAIMAGE.format(dims="4 4 4", data="short.raw"))
    (folder / "local.mha").write_text(METAIMAGE.format(dims="1000 1000 100", data="LOCAL") + "tiny")
    write_big_dicom(folder / "huge.dcm")
    write_nifti_bomb(folder / "bomb.nii.gz")
    return {
        "zero.mha": "datafile",
        "up.mhd": "datafile",
        "link.mhd": "datafile",
        "abs.nhdr": "datafile",
        "short.mhd": "truncated",
        "local.mha": "truncated",
        "huge.dcm": "size",
        "bomb.nii.gz": "size",
    }


def write_big_dicom(path) -> None:
    """A DICOM of a few hundred bytes whose header says 65535 x 65535 pixels (8 GiB as uint16)."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = CTImageStorage, meta.MediaStorageSOPInstanceUID, "CT"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 65535, 65535, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = bytes(16)
    ds.save_as(str(path), enforce_file_format=True)
    assert pydicom.dcmread(str(path)).Rows == 65535


def write_nifti_bomb(path) -> None:
    """A gzipped NIfTI whose header declares 2000 x 1000 x 1000 uint8 (2 GB; a real one of zeros
    gzips to 2 MB), with the gzip trailer claiming that length, so only the header tells. (Its
    first 256 KiB are noise, so that a reader of the header stops before the forged trailer.)"""
    import nibabel

    image = nibabel.Nifti1Image(np.zeros((1, 1, 1), np.uint8), np.eye(4))
    image.header.set_data_shape((2000, 1000, 1000))
    declared = 352 + 2000 * 1000 * 1000
    noise = np.random.default_rng(0).integers(0, 255, 1 << 18, dtype=np.uint8).tobytes()
    stream = gzip.compress(image.header.binaryblock + bytes(4) + noise, compresslevel=1)
    path.write_bytes(stream[:-4] + (declared % 2**32).to_bytes(4, "little"))


def pack(inputs, out, np_=1) -> int:
    return pack_cli.main(["-i", *map(str, inputs), "-o", str(out), "-np", str(np_)])


def test_tiny_files_declaring_huge_or_outside_pixels_are_unusable_and_never_read(tmp_path, monkeypatch, capsys):
    expected = write_hostile_corpus(tmp_path / "hostile")
    write_png(tmp_path / "hostile" / "good.png")
    real, read = files_module.read_image, []

    def read_image(path):  # reading any refused file would allocate gigabytes: the test stops it
        read.append(os.path.basename(path))
        if os.path.basename(path) in expected:
            raise MemoryError(path)
        return real(path)

    monkeypatch.setattr(files_module, "read_image", read_image)
    assert pack([tmp_path / "hostile"], tmp_path / "pack") == 0
    assert read == ["good.png"]
    skipped = {os.path.basename(p): reason for p, reason, _ in PackSource(str(tmp_path / "pack")).skipped}
    assert skipped == expected
    assert "8 of 9 files" in capsys.readouterr().out


def test_pixel_data_beside_the_header_and_held_by_the_file_are_read(tmp_path):
    import SimpleITK as sitk

    volume = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)
    for name in ("v.mha", "v.mhd", "v.nrrd", "v.nhdr"):
        sitk.WriteImage(sitk.GetImageFromArray(volume), str(tmp_path / name))
        assert screen_header(str(tmp_path / name)) == ((2, 3, 4), 1), name
    (tmp_path / "list.mhd").write_text(
        METAIMAGE.format(dims="4 3 2", data="LIST").replace("MET_UCHAR", "MET_SHORT") + "v.raw\n"
    )
    assert screen_header(str(tmp_path / "list.mhd")) == ((2, 3, 4), 1)
    (tmp_path / "v.raw").write_bytes(bytes(47))  # one byte short
    with pytest.raises(Unusable) as refused:
        screen_header(str(tmp_path / "list.mhd"))
    assert refused.value.reason == "truncated"


def test_a_worker_that_dies_fails_the_pack_with_a_sentence_instead_of_hanging(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "corpus"
    folder.mkdir()
    for name in ("a.png", "b.png", "c.png", DIES_ON, "e.png"):
        write_png(folder / name)
    monkeypatch.setattr(pack_module, "pack_file_job", die_on_one_file)
    monkeypatch.setattr(pack_cli, "available_cores", lambda: 2, raising=False)
    codes = []
    run = threading.Thread(target=lambda: codes.append(pack([folder], tmp_path / "pack", np_=2)), daemon=True)
    run.start()
    run.join(120)
    assert codes == [2], "the pack waits forever for its dead worker"
    err = capsys.readouterr().err
    assert "worker died" in err and DIES_ON in err and "Traceback" not in err


def test_more_processes_than_cores_are_capped(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "corpus"
    folder.mkdir()
    write_png(folder / "a.png")
    write_png(folder / "b.png")
    monkeypatch.setattr(pack_cli, "available_cores", lambda: 1, raising=False)
    used = []
    real = pack_module.pack_corpus
    monkeypatch.setattr(pack_module, "pack_corpus", lambda *a: used.append(a[-1]) or real(*a))
    assert pack([folder], tmp_path / "pack", np_=1000) == 0
    assert used == [1]
    assert "-np 1000 is more than the 1 CPU cores available" in capsys.readouterr().out


def test_the_default_number_of_processes_is_capped_silently(monkeypatch, capsys):
    monkeypatch.setattr(pack_cli, "available_cores", lambda: 2)
    monkeypatch.setattr(pack_cli, "_default_processes", lambda: 8)  # nnUNet_def_n_proc, or 8
    assert pack_cli.capped_processes(None) == 2 and pack_cli.capped_processes(2) == 2
    assert capsys.readouterr().out == ""
