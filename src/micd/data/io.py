"""File helpers shared by the data stages: case lists, CSV, checksums, NIfTI volumes.

Every writer here either leaves the complete output or nothing: files are written to a
temporary sibling and moved into place with :func:`os.replace`.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from micd.atomic import atomic_write
from micd.errors import case_error


def read_case_list(path: Path, data_dir: Path | None = None) -> list[str]:
    """Case ids of a one-id-per-line text file, blank lines skipped.

    An id is a name, never a path (so no file outside the data folder is read for it); with
    ``data_dir``, each must be a case of its ``cases.csv`` (where the folder has one). A bad id
    is an error naming the list file and the id."""
    ids = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    for case_id in ids:
        if case_id in (".", "..") or any(mark in case_id for mark in ("/", "\\", "\0")):
            raise case_error(
                case_id, path, "expected a case id (a name such as amos_0001), found a path: ids never name a file"
            )
    cases_csv = Path(data_dir) / "cases.csv" if data_dir is not None else None
    if cases_csv is not None and cases_csv.is_file():
        with open(cases_csv, newline="") as f:
            known = {row["case_id"] for row in csv.DictReader(f)}
        unknown = [case_id for case_id in ids if case_id not in known]
        if unknown:
            raise case_error(
                unknown[0], path, f"not a case of the data set: {cases_csv} lists no such id ({len(unknown)} such ids)"
            )
    return ids


def write_case_list(path: Path, ids: Iterable[str]) -> None:
    """Write case ids one per line (atomically)."""
    atomic_write(path, "".join(f"{case_id}\n" for case_id in ids))


def write_csv(path: Path, columns: Sequence[str], rows: Iterable[Mapping[str, object]]) -> None:
    """Write rows (dicts keyed by column) as CSV with a header line (atomically)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, buffer.getvalue())


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes (``algorithm``: any of :mod:`hashlib`'s, e.g. ``md5``)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Volume:
    """A 3-D array in NIfTI voxel order (x, y, z) and its voxel-to-world affine (mm)."""

    data: np.ndarray
    affine: np.ndarray

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along the array's three axes."""
        return tuple(float(s) for s in nib.affines.voxel_sizes(self.affine))  # type: ignore[return-value]


def load_nifti(path: Path, case_id: str | None = None) -> Volume:
    """Read a 3-D NIfTI file completely; any failure raises DataError naming case and file.

    The array keeps its stored dtype unless the header asks for intensity scaling.
    """
    try:
        image = nib.load(str(path))
        data = np.asanyarray(image.dataobj)
    except Exception as exc:  # nibabel, gzip and zlib each raise their own kinds
        raise case_error(
            case_id,
            path,
            f"expected a readable NIfTI file; it may be truncated or damaged, so extract or download it again ({exc})",
        ) from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise case_error(case_id, path, f"expected a 3-D volume, found shape {data.shape}")
    return Volume(data, np.asarray(image.affine, dtype=np.float64))


def save_nifti(path: Path, volume: Volume) -> None:
    """Write ``volume`` as NIfTI (gzipped if the name ends in .gz), atomically and byte-reproducibly.

    The gzip stream is written here with mtime 0 so the same volume always gives the same bytes.
    """
    image = nib.Nifti1Image(volume.data, volume.affine)
    image.set_qform(volume.affine, code=1)
    image.set_sform(volume.affine, code=1)
    image.header.set_xyzt_units("mm")
    raw = image.to_bytes()
    if str(path).endswith(".gz"):
        # Level 1: CT noise barely compresses further at higher levels, which cost 4x the time.
        raw = gzip.compress(raw, compresslevel=1, mtime=0)
    atomic_write(path, raw)
