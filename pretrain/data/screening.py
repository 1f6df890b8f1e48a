"""Which files of a messy corpus can be used, and why the others cannot.

``screen_header`` runs once per file when the manifest is built (headers only, so a corpus of
millions of files is screened quickly); ``screen_pixels`` runs when an image is actually loaded,
where truncated pixel data, missing codecs, NaN/Inf and constant images show. Both raise
``Unusable`` with one of the ``REASONS`` keys, so skipped files can be counted by reason.

Readable variations are converted, not skipped: RGB(A) becomes grayscale (alpha dropped), 16-bit
and float images are read as float32, 3D files (multi-frame DICOM, multi-page TIFF, volumes) are
cut into 2D slices.

A header is also weighed before any pixel is read: an image that would decode to more than
``MAX_DECODED_BYTES``, or whose raw pixels the file cannot hold, is unusable (a 100-byte header
cannot make the run allocate gigabytes), and a MetaImage or NRRD header may name only a data file
beside it in the same folder (never ``/dev/zero``, a path elsewhere or ``../``).
"""

from __future__ import annotations

import gzip
import os
import stat

import numpy as np

from nnunetv2_vismae.io.images import (
    MAX_DECODED_BYTES,
    decoded_bytes,
    file_kind,
    pixel_storage,
    read_header,
    stored_component_bytes,
)

REASONS = {
    "link": "symbolic link to nothing (dangling, or a loop)",
    "empty": "empty file (0 bytes)",
    "permission": "no read permission",
    "header": "unreadable header (not an image of its type, or corrupt)",
    "truncated": "truncated (shorter than its header says)",
    "size": f"declared larger than {MAX_DECODED_BYTES // 2**30} GiB decoded (the most an image may take in memory)",
    "datafile": "header naming pixel data outside its folder (only a data file beside it is read)",
    "dimensions": "more than 3 dimensions (expected a 2D image or a 3D volume)",
    "components": "pixel components other than gray, RGB or RGBA",
    "pixels": "pixel data cannot be decoded (truncated, corrupt, or compressed with a codec that is not installed)",
    "shape": "pixel data differ from the shape in the header",
    "nonfinite": "NaN or Inf pixels",
    "constant": "constant image (one value everywhere)",
}


class Unusable(Exception):
    """A file the corpus cannot use: ``reason`` (a key of REASONS) and a short ``detail``."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{REASONS[reason]}" + (f": {detail}" if detail else ""))
        self.reason, self.detail = reason, detail


def first_line(error: BaseException) -> str:
    """The first line of an exception's text (SimpleITK's run to dozens), or its type's name."""
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__


def screen_header(path: str) -> tuple[tuple[int, int, int], int]:
    """(Z, Y, X) and number of pixel components of a usable file, reading its header only."""
    try:
        size = os.stat(path).st_size
    except OSError as e:
        if os.path.islink(path):
            raise Unusable("link", f"{e.strerror}: points to {os.readlink(path)}") from None
        raise Unusable("permission" if isinstance(e, PermissionError) else "header", first_line(e)) from None
    if size == 0:
        raise Unusable("empty")
    if not os.access(path, os.R_OK):
        raise Unusable("permission")
    try:
        storage = pixel_storage(path)  # before any reader opens what the header names
        _check_data_files(path, storage)
        shape, components = _raw_header(path)
    except Unusable:
        raise
    except PermissionError as e:
        raise Unusable("permission", first_line(e)) from None
    except Exception as e:  # every reader has its own exception types; all mean the same here
        raise Unusable("header", first_line(e)) from None
    if len(shape) > 3:
        raise Unusable("dimensions", f"shape {list(shape)}")
    if components not in (1, 3, 4):
        raise Unusable("components", f"{components} components per pixel")
    if decoded_bytes(shape, components) > MAX_DECODED_BYTES:
        raise Unusable("size", f"shape {list(shape)}, {components} components per pixel")
    if storage is not None and storage.raw:
        _check_raw_length(path, storage, shape, components)
    if path.lower().endswith((".nii", ".nii.gz")):
        _check_nifti_length(path, size)
    return (1,) * (3 - len(shape)) + tuple(shape), components


def _check_data_files(path: str, storage) -> None:
    """The data files a MetaImage or NRRD header names must be regular files beside it."""
    for name in storage.files if storage else []:
        sibling = os.path.join(os.path.dirname(path), name)
        if os.path.basename(name) != name or name in (".", "..") or not _is_regular_file(sibling):
            raise Unusable("datafile", f"data file {name!r}")


def _is_regular_file(path: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _check_raw_length(path: str, storage, shape, components: int) -> None:
    """Uncompressed pixels must fit in the file(s) that hold them: ITK allocates the size the header
    declares before it reads (and zero-fills what is missing)."""
    if storage.files:
        held = sum(os.path.getsize(os.path.join(os.path.dirname(path), name)) for name in storage.files)
    else:
        held = os.path.getsize(path) - storage.offset
    needed = int(np.prod(shape)) * components * stored_component_bytes(path)
    if held < needed:
        raise Unusable("truncated", f"{max(held, 0)} bytes of pixel data, the header needs {needed}")


def _raw_header(path: str) -> tuple[tuple[int, ...], int]:
    """Shape in numpy order (any number of dimensions) and components, without reading pixels.

    TIFF is read by tifffile (as ``read_image`` does; SimpleITK sees a multi-page TIFF as RGBA).
    """
    if file_kind(path) == "tiff":
        import tifffile

        with tifffile.TiffFile(path) as tif:
            shape = tuple(int(s) for s in tif.series[0].shape)
        if len(shape) >= 3 and shape[-1] in (3, 4):
            return shape[:-1], shape[-1]
        return shape, 1
    try:
        return read_header(path)
    except ValueError as e:  # read_header refuses 4D; report it as a dimension problem
        import SimpleITK as sitk

        reader = sitk.ImageFileReader()
        reader.SetFileName(path)
        reader.ReadImageInformation()
        if len(reader.GetSize()) > 3:
            return tuple(reversed(reader.GetSize())), reader.GetNumberOfComponents()
        raise e


def _check_nifti_length(path: str, file_size: int) -> None:
    """ITK zero-fills what is missing from a truncated NIfTI file; catch that from the header.

    Uncompressed: the file must hold offset + data bytes. Gzipped: the gzip trailer records the
    uncompressed length (mod 2^32); only when it disagrees is the stream decompressed to be sure
    (a file of several gzip members also disagrees, and is fine).
    """
    import nibabel

    header = nibabel.load(path).header
    expected = int(header.get_data_offset()) + int(np.prod(header.get_data_shape())) * header.get_data_dtype().itemsize
    if not path.lower().endswith(".gz"):
        if file_size < expected:
            raise Unusable("truncated", f"{file_size} bytes, the header needs {expected}")
        return
    with open(path, "rb") as f:
        f.seek(-4, os.SEEK_END)
        recorded = int.from_bytes(f.read(4), "little")
    if recorded == expected % 2**32:
        return
    length = 0
    try:
        with gzip.open(path, "rb") as stream:
            while chunk := stream.read(1 << 22):
                length += len(chunk)
    except (EOFError, OSError, gzip.BadGzipFile) as e:
        raise Unusable("truncated", first_line(e)) from None
    if length < expected:
        raise Unusable("truncated", f"{length} bytes after decompression, the header needs {expected}")


def decode_failure(path: str, error: BaseException) -> Unusable:
    """Reading the pixels failed; for DICOM name the transfer syntax (a missing codec shows there)."""
    detail = first_line(error)
    if file_kind(path) == "dicom":
        try:
            import pydicom

            syntax = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
            detail = f"transfer syntax {syntax.name} ({syntax})"
        except Exception:
            pass  # keep the reader's own message
    return Unusable("pixels", detail)


def screen_pixels(image: np.ndarray, expected_zyx) -> None:
    """An image as read (C x Z x Y x X, before normalization) must match its header and vary."""
    if tuple(image.shape[1:]) != tuple(expected_zyx):
        raise Unusable("shape", f"read {list(image.shape[1:])}, header {list(expected_zyx)}")
    if not np.isfinite(image).all():
        raise Unusable("nonfinite", f"{int(np.count_nonzero(~np.isfinite(image)))} pixels")
    if image.size and image.min() == image.max():
        raise Unusable("constant", f"value {float(image.flat[0]):g}")
