"""Real NIfTI files with what a careless tool writes: any affine (NaN, a zero column), any dtype."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from micd.cli import main

_QFORM_CODE, _SFORM_CODE, _SROW_X = 252, 254, 280  # byte offsets in the NIfTI-1 header


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    """``data`` as a NIfTI file whose header's sform is ``affine`` as given (no qform), even where
    nibabel would refuse to write it: the header fields are set byte by byte."""
    raw = bytearray(nib.Nifti1Image(data, np.eye(4)).to_bytes())
    struct.pack_into("<h", raw, _QFORM_CODE, 0)
    struct.pack_into("<h", raw, _SFORM_CODE, 1)
    struct.pack_into("<12f", raw, _SROW_X, *np.asarray(affine, dtype=np.float32)[:3].ravel())
    Path(path).write_bytes(gzip.compress(bytes(raw)) if str(path).endswith(".gz") else bytes(raw))
    return Path(path)


def micd_error(*args: object) -> str:
    """The one line ``micd`` ends with on an error (it must end with one)."""
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    message = exit_info.value.code
    assert isinstance(message, str), f"expected an error message, got exit code {message!r}"
    assert "Traceback" not in message
    return message
