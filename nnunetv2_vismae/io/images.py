"""Reading 2D images and volumes of any format the project accepts, as float32 C x Z x Y x X.

nnU-Net's reader classes are used where nnU-Net has one (``NaturalImage2DIO`` for PNG/JPG/BMP,
``SimpleITKIO`` for NIfTI/MHA/NRRD); SimpleITK (GDCM) for DICOM and tifffile for TIFF, which nnU-Net
does not read in 2D. Float NIfTI is read by nibabel: SimpleITK reads its NaN and Inf as 0, which would
hide them from screening (and let a broken volume be trained on).
"""

from __future__ import annotations

import zlib

import numpy as np

NATURAL_ENDINGS = (".png", ".jpg", ".jpeg", ".bmp")
TIFF_ENDINGS = (".tif", ".tiff")
DICOM_ENDINGS = (".dcm", ".dicom")
NIFTI_ENDINGS = (".nii.gz", ".nii")
VOLUME_ENDINGS = NIFTI_ENDINGS + (".mha", ".mhd", ".nrrd", ".nhdr", ".gipl")
SUPPORTED_ENDINGS = NATURAL_ENDINGS + TIFF_ENDINGS + DICOM_ENDINGS + VOLUME_ENDINGS


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
