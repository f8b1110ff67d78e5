"""What an image must be before micd converts it for training or segments it: one rule for both.

- its affine is finite and no voxel axis has zero length (NIfTI files written by broken tools
  carry NaN or a zero column, and every resampling divides by it);
- its voxel spacing lies in :data:`SPACING_RANGE_MM` (a 1e9 mm voxel would make the spacing
  mode allocate terabytes, and volumes in mL would be nonsense);
- its values are not all the same;
- a CT is in Hounsfield units: its lowest value between :data:`HU_FLOOR` and
  :data:`HU_LOWEST_EXPECTED` (air, or the scanner's padding outside the field of view), not
  counting one padding value below :data:`HU_FLOOR` (-32768 in some exports);
- a scan to segment has at least :data:`MIN_SCAN_VOXELS` voxels along every axis.

Each failure is a :class:`~micd.errors.DataError` naming the case and the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from micd.data.io import Volume
from micd.errors import case_error

# Hounsfield units: the lowest value a scanner writes is its padding outside the field of view
# (-3024 on some; air is -1000), and every CT of the trunk holds fat (-100) or air.
HU_FLOOR = -3100.0
HU_LOWEST_EXPECTED = -200.0
# From sub-millimetre in-plane voxels to the thickest clinical slices (10 mm), with room for the
# coarse synthetic phantoms of the tests (16 slices over the trunk: 30 mm).
SPACING_RANGE_MM = (0.05, 50.0)
MIN_SCAN_VOXELS = 8  # along each axis: the smallest volume a 3-D network is given to segment
_HU_WORDS = "air -1000, fat -100, water 0"


def check_affine(volume: Volume, case_id: str | None, path: Path) -> None:
    """A finite voxel-to-world affine whose three voxel axes have a length and are independent."""
    affine = np.asarray(volume.affine, dtype=np.float64)
    if not np.isfinite(affine).all():
        raise case_error(
            case_id,
            path,
            "expected a finite affine (the header's sform/qform), found NaN or infinite entries; "
            "rewrite the file with its voxel size and orientation",
        )
    lengths = np.linalg.norm(affine[:3, :3], axis=0)
    zero = [axis for axis, length in enumerate(lengths) if length == 0]
    if zero:
        raise case_error(
            case_id,
            path,
            f"expected an affine whose columns give each voxel axis a size, found column {zero[0]} all zeros "
            "(a voxel of no size along that axis); rewrite the file with its voxel size",
        )
    if abs(np.linalg.det(affine[:3, :3])) <= 1e-12 * float(np.prod(lengths)):
        raise case_error(
            case_id, path, "expected an affine whose voxel axes point in three directions, found it singular"
        )


def check_spacing(volume: Volume, case_id: str | None, path: Path) -> None:
    """Voxel sizes within :data:`SPACING_RANGE_MM` (call after :func:`check_affine`)."""
    low, high = SPACING_RANGE_MM
    spacing = volume.spacing
    if min(spacing) < low or max(spacing) > high:
        shown = " x ".join(f"{s:g}" for s in spacing)
        raise case_error(
            case_id,
            path,
            f"expected voxel sizes between {low:g} and {high:g} mm, found {shown} mm: is the header's voxel size "
            "(pixdim, or the affine) in mm?",
        )


def check_not_constant(volume: Volume, case_id: str | None, path: Path) -> None:
    data = volume.data
    if data.size and float(data.min()) == float(data.max()):
        raise case_error(case_id, path, f"expected an image, found every voxel the same value ({float(data.min()):g})")


def check_ct(volume: Volume, case_id: str | None, path: Path) -> None:
    """A DataError unless the values look like CT in Hounsfield units."""
    data = volume.data
    if not np.issubdtype(data.dtype, np.number) or data.size == 0:
        raise case_error(case_id, path, f"expected a CT in HU, found an empty or non-numeric volume ({data.dtype})")
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        raise case_error(case_id, path, "expected finite CT values, found NaN or infinite voxels")
    if np.issubdtype(data.dtype, np.integer) and np.iinfo(data.dtype).bits < 16:
        raise case_error(
            case_id,
            path,
            f"expected a CT in Hounsfield units ({_HU_WORDS}, bone above 1000), found {data.dtype} voxels, "
            "which cannot hold them: was the image converted or windowed to 8 bits?",
        )
    low, high = float(data.min()), float(data.max())
    if low < HU_FLOOR:  # one padding value outside the field of view (-32768 in some exports)
        inside = data[data > low]
        low = float(inside.min()) if inside.size else low
    if low < HU_FLOOR or low > HU_LOWEST_EXPECTED:
        hint = (
            f" (a {data.dtype} image from 0 up: is its -1024 rescale intercept, scl_inter, missing?)"
            if np.issubdtype(data.dtype, np.unsignedinteger)
            else ""
        )
        raise case_error(
            case_id,
            path,
            f"expected a CT in Hounsfield units ({_HU_WORDS}; lowest value between "
            f"{HU_FLOOR:g} and {HU_LOWEST_EXPECTED:g}), found values {low:g} to {high:g}{hint}: is it a CT, "
            "with its values rescaled to HU (the header's scl_slope and scl_inter)?",
        )
    check_not_constant(volume, case_id, path)


def check_geometry(volume: Volume, case_id: str | None, path: Path) -> None:
    """A finite, non-singular affine and voxel sizes in :data:`SPACING_RANGE_MM`."""
    check_affine(volume, case_id, path)
    check_spacing(volume, case_id, path)


def check_training_image(volume: Volume, case_id: str, path: Path, modality: str) -> None:
    """An image to convert for training: its geometry, and a CT in HU (other modalities: not constant)."""
    check_geometry(volume, case_id, path)
    if modality == "ct":
        check_ct(volume, case_id, path)
    else:
        check_not_constant(volume, case_id, path)


def check_scan_to_segment(volume: Volume, name: str, path: Path) -> None:
    """A scan for ``micd segment``: a training image's checks and a size a network can segment."""
    if min(volume.data.shape) < MIN_SCAN_VOXELS:
        raise case_error(
            name,
            path,
            f"expected at least {MIN_SCAN_VOXELS} voxels along every axis to segment, found shape {volume.data.shape}",
        )
    check_training_image(volume, name, path, "ct")
