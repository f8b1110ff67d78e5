"""Errors a user can act on: the command line prints their message, without a traceback."""

from __future__ import annotations

from os import PathLike


class SettingsError(ValueError):
    """A configuration value the code cannot use; the message names the key and what is allowed."""


class RunInUseError(RuntimeError):
    """Another live process is training the same run directory; the message names it."""


class DiskFullError(OSError):
    """A write failed for want of space (or quota); the message names the folder, and the
    earlier file or folder there is left as it was (micd.atomic)."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


class DataError(ValueError):
    """Input data that cannot be used; the message names the case, the file and what was expected."""


def case_error(case_id: str | None, path: str | PathLike[str] | None, problem: str) -> DataError:
    """A :class:`DataError` whose message starts with the case id and the file.

    >>> str(case_error("amos_0001", "labelsTr/amos_0001.nii.gz", "expected uint8 labels"))
    'case amos_0001, file labelsTr/amos_0001.nii.gz: expected uint8 labels'
    """
    where = [
        f"case {case_id}" if case_id else "",
        f"file {path}" if path is not None else "",
    ]
    prefix = ", ".join(part for part in where if part)
    return DataError(f"{prefix}: {problem}" if prefix else problem)
