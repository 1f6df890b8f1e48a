"""Helpers of the reliability tests: a messy corpus with every kind of bad file, one torch thread."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch


@pytest.fixture
def single_thread():
    """One intra-op thread: on 2 shared cores, tiny models run several times faster than with 2."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# file name -> the reason it is skipped (None: usable, possibly after conversion)
EXPECTED = {
    "gray.png": None,
    "rgba.png": None,
    "u16.png": None,
    "pages.tif": None,
    "ct.dcm": None,
    "vol.nii.gz": None,
    "zero.png": "empty",
    "locked.png": "permission",
    "cut_header.dcm": "header",
    "time.nii.gz": "dimensions",
    "cut.nii": "truncated",
    "cut.nii.gz": "truncated",
    "cut.png": "pixels",
    "cut.jpg": "pixels",
    "htj2k.dcm": "pixels",
    "nan.mha": "nonfinite",
    "flat.png": "constant",
}
AT_MANIFEST = {"empty", "permission", "header", "dimensions", "truncated"}


def _image(rng, h=40, w=44) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return np.clip(120 + 60 * np.sin(xx / 5) * np.cos(yy / 7) + rng.normal(0, 8, (h, w)), 0, 255)


def write_dicom(path: Path, transfer_syntax: str | None = None, pixel_data: bytes | None = None) -> None:
    """A 20 x 30 CT slice; with ``transfer_syntax``, ``pixel_data`` is encapsulated as that syntax."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
    meta.TransferSyntaxUID = UID(transfer_syntax) if transfer_syntax else ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = CTImageStorage, meta.MediaStorageSOPInstanceUID, "CT"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 20, 30, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    if transfer_syntax:
        ds.PixelData = encapsulate([pixel_data])
        ds["PixelData"].VR = "OB"
    else:
        ds.PixelData = (np.arange(600, dtype=np.uint16) * 7).tobytes()
    ds.save_as(str(path), enforce_file_format=True)


def _cut(source: Path, target: Path, keep: float) -> None:
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * keep)])


def write_messy_corpus(folder: Path, deny_read) -> Path:
    """Every file of EXPECTED in ``folder``; ``deny_read(path)`` makes one file unreadable."""
    import SimpleITK as sitk
    import tifffile
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    gray = _image(rng).astype(np.uint8)
    Image.fromarray(gray).save(folder / "gray.png")
    Image.fromarray(np.dstack([gray, gray // 2, 255 - gray, np.full_like(gray, 7)])).save(folder / "rgba.png")
    Image.fromarray((_image(rng) * 250).astype(np.uint16)).save(folder / "u16.png")  # up to 63750
    tifffile.imwrite(
        folder / "pages.tif", np.stack([_image(rng) for _ in range(3)]).astype(np.uint16), photometric="minisblack"
    )
    write_dicom(folder / "ct.dcm")
    volume = np.stack([_image(rng) for _ in range(4)]).astype(np.float32)
    sitk.WriteImage(sitk.GetImageFromArray(volume), str(folder / "vol.nii.gz"))

    (folder / "zero.png").write_bytes(b"")
    Image.fromarray(gray).save(folder / "locked.png")
    deny_read(folder / "locked.png")
    _cut(folder / "ct.dcm", folder / "cut_header.dcm", 0.5)
    sitk.WriteImage(sitk.JoinSeries([sitk.GetImageFromArray(volume[:2])] * 2), str(folder / "time.nii.gz"))
    sitk.WriteImage(sitk.GetImageFromArray(volume), str(folder / "full.nii"))
    _cut(folder / "full.nii", folder / "cut.nii", 0.6)
    os.remove(folder / "full.nii")
    _cut(folder / "vol.nii.gz", folder / "cut.nii.gz", 0.6)
    Image.fromarray(gray).save(folder / "full.png")
    _cut(folder / "full.png", folder / "cut.png", 0.5)
    os.remove(folder / "full.png")
    Image.fromarray(gray).save(folder / "full.jpg")
    _cut(folder / "full.jpg", folder / "cut.jpg", 0.5)
    os.remove(folder / "full.jpg")
    # HTJ2K (a JPEG 2000 variant) that this SimpleITK/GDCM has no codec for
    write_dicom(folder / "htj2k.dcm", "1.2.840.10008.1.2.4.201", b"\xff\x4f\xff\x51" + bytes(range(200)))
    with_nan = volume[:2].copy()
    with_nan[1, 5, 5] = np.nan
    sitk.WriteImage(sitk.GetImageFromArray(with_nan), str(folder / "nan.mha"))
    Image.fromarray(np.full((40, 44), 90, np.uint8)).save(folder / "flat.png")
    assert sorted(os.listdir(folder)) == sorted(EXPECTED)
    return folder
