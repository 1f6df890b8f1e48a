"""Reading 2D images and volumes of any format the project accepts, as float32 C x Z x Y x X.

nnU-Net's reader classes are used where nnU-Net has one (``NaturalImage2DIO`` for PNG/JPG/BMP,
``SimpleITKIO`` for NIfTI/MHA/NRRD); SimpleITK (GDCM) for DICOM and tifffile for TIFF, which nnU-Net
does not read in 2D. Float NIfTI is read by nibabel: SimpleITK reads its NaN and Inf as 0, which would
hide them from screening (and let a broken volume be trained on).
"""

from __future__ import annotations

import math
import zlib
from typing import NamedTuple

import numpy as np

NATURAL_ENDINGS = (".png", ".jpg", ".jpeg", ".bmp")
TIFF_ENDINGS = (".tif", ".tiff")
DICOM_ENDINGS = (".dcm", ".dicom")
NIFTI_ENDINGS = (".nii.gz", ".nii")
VOLUME_ENDINGS = NIFTI_ENDINGS + (".mha", ".mhd", ".nrrd", ".nhdr", ".gipl")
SUPPORTED_ENDINGS = NATURAL_ENDINGS + TIFF_ENDINGS + DICOM_ENDINGS + VOLUME_ENDINGS
METAIMAGE_ENDINGS = (".mha", ".mhd")
NRRD_ENDINGS = (".nrrd", ".nhdr")

# The most an image may decode to, as the float32 array ``read_image`` returns (512 x 512 x 2048 gray
# voxels; no real scan needs more): a header that declares more is refused before any pixel is read,
# so that a 100-byte file cannot exhaust the memory.
MAX_DECODED_BYTES = 2**31
HEADER_TEXT_LIMIT = 1 << 20  # MetaImage and NRRD headers are text of a few hundred bytes


def file_kind(path: str) -> str | None:
    name = path.lower()
    for kind, endings in (
        ("natural", NATURAL_ENDINGS),
        ("tiff", TIFF_ENDINGS),
        ("dicom", DICOM_ENDINGS),
        ("volume", VOLUME_ENDINGS),
    ):
        if name.endswith(endings):
            return kind
    return None


def read_header(path: str) -> tuple[tuple[int, int, int], int]:
    """Shape (Z, Y, X) in numpy order (Z = 1 for 2D images) and number of components, header only."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    reader.ReadImageInformation()
    size = tuple(int(s) for s in reversed(reader.GetSize()))
    if len(size) == 2:
        size = (1,) + size
    if len(size) != 3:
        raise ValueError(f"{len(size)}D images are not supported")
    return size, int(reader.GetNumberOfComponents())


def decoded_bytes(shape, components: int) -> int:
    """Bytes of the float32 array ``read_image`` returns for an image of ``shape`` and ``components``."""
    return math.prod(int(n) for n in shape) * int(components) * np.dtype(np.float32).itemsize


def stored_component_bytes(path: str) -> int:
    """Bytes per pixel component as the file stores them (its header's pixel type)."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    reader.ReadImageInformation()
    return sitk.GetArrayViewFromImage(sitk.Image([1, 1], reader.GetPixelID())).itemsize


class PixelStorage(NamedTuple):
    """Where a MetaImage's or NRRD's header puts its pixels: ``files`` as the header names them
    (empty when they follow the header in the same file, ``offset`` bytes in), and whether they
    are stored ``raw`` (uncompressed, so the file's size must hold them)."""

    files: list[str]
    raw: bool
    offset: int


def pixel_storage(path: str) -> PixelStorage | None:
    """The pixel storage a MetaImage (.mha/.mhd) or NRRD (.nrrd/.nhdr) header declares, read from its
    text alone; None for other formats. Raises ValueError for a header that is not text of its kind."""
    name = path.lower()
    if not name.endswith(METAIMAGE_ENDINGS + NRRD_ENDINGS):
        return None
    with open(path, "rb") as f:
        head = f.read(HEADER_TEXT_LIMIT)
    if name.endswith(METAIMAGE_ENDINGS):
        return _metaimage_storage(head)
    return _nrrd_storage(head)


def _header_lines(head: bytes):
    """(line, offset just after it) of a text header."""
    offset = 0
    for line in head.splitlines(keepends=True):
        offset += len(line)
        yield line.decode("latin-1").strip(), offset


def _metaimage_storage(head: bytes) -> PixelStorage:
    """``ElementDataFile`` is a MetaImage header's last field: LOCAL (the pixels follow), a file
    name, ``LIST`` (file names on the lines after it) or a numbered pattern (``f%03d.raw 1 9 1``)."""
    fields, lines = {}, _header_lines(head)
    for line, offset in lines:
        key, _, value = line.partition("=")
        fields[key.strip().lower()] = value.strip()
        if key.strip().lower() == "elementdatafile":
            break
    else:
        raise ValueError("a MetaImage header without ElementDataFile")
    raw = fields.get("compresseddata", "false").lower() != "true"
    value = fields["elementdatafile"]
    if value.upper() == "LOCAL":
        return PixelStorage([], raw, offset)
    if value.upper().split()[:1] == ["LIST"]:
        return PixelStorage([line for line, _ in lines if line], raw, 0)
    return PixelStorage([value], raw, 0)  # a pattern keeps its spaces, and is refused as no file's name


def _nrrd_storage(head: bytes) -> PixelStorage:
    """NRRD fields ``key: value`` up to a blank line, after which attached pixels follow; ``data
    file`` (or ``datafile``) names detached ones: a file name, ``LIST`` (names on the lines after
    it) or a pattern with numbers."""
    lines = _header_lines(head)
    first, offset = next(lines, ("", 0))
    if not first.startswith("NRRD"):
        raise ValueError("an NRRD header that does not start with NRRD")
    fields, files = {}, None
    for line, offset in lines:
        if not line:
            break
        if line.startswith("#") or ":=" in line:  # comments, key/value pairs
            continue
        key, _, value = line.partition(":")
        key = key.strip().lower().replace(" ", "")
        fields[key] = value.strip()
        if key == "datafile":
            files = [line for line, _ in lines if line] if value.split()[:1] == ["LIST"] else [value.strip()]
            break
    return PixelStorage(files or [], fields.get("encoding", "raw").lower() == "raw", offset)


def read_image(path: str) -> np.ndarray:
    """The whole image as float32 C x Z x Y x X (C = colour components, Z = 1 for 2D images)."""
    kind = file_kind(path)
    if kind == "natural":
        from nnunetv2.imageio.natural_image_reader_writer import NaturalImage2DIO

        return NaturalImage2DIO().read_images([path])[0]
    if kind == "volume":
        float_nifti = read_float_nifti(path) if path.lower().endswith(NIFTI_ENDINGS) else None
        if float_nifti is not None:
            return float_nifti
        from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

        return SimpleITKIO().read_images([path])[0]
    if kind == "tiff":
        import tifffile

        arr = tifffile.imread(path)
    else:  # dicom: nnU-Net has no DICOM reader; SimpleITK (GDCM) applies rescale slope/intercept
        import SimpleITK as sitk

        arr = sitk.GetArrayFromImage(sitk.ReadImage(path))
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim == 2:
        return arr[None, None]
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):  # Y x X x RGB(A)
        return np.moveaxis(arr, -1, 0)[:, None]
    if arr.ndim == 3:
        return arr[None]
    if arr.ndim == 4 and arr.shape[-1] in (3, 4):  # Z x Y x X x RGB
        return np.moveaxis(arr, -1, 0)
    raise ValueError(f"unsupported array shape {arr.shape}")


def read_float_nifti(path: str) -> np.ndarray | None:
    """A 2D or 3D NIfTI of floating-point data as float32 1 x Z x Y x X, as SimpleITK lays it out but
    with NaN and Inf kept; None for any other NIfTI (integers cannot hold NaN; SimpleITK reads them,
    and reports a file it cannot read)."""
    import nibabel
    from nibabel.filebasedimages import ImageFileError

    try:
        nifti = nibabel.load(path)
    except (ImageFileError, OSError, ValueError):
        return None
    if nifti.ndim not in (2, 3) or not np.issubdtype(nifti.get_data_dtype(), np.floating):
        return None
    try:
        data = np.asarray(nifti.dataobj, dtype=np.float32)  # scl_slope / scl_inter applied
    except (EOFError, zlib.error) as e:  # truncated or corrupt gzip stream
        raise ValueError(f"{path}: NIfTI pixel data cannot be read ({e})") from None
    data = np.ascontiguousarray(data.T)  # nibabel's X, Y(, Z) -> SimpleITK's (Z,) Y, X
    return data.reshape((1,) * (4 - data.ndim) + data.shape)
