"""Errors a user can act on: the command line prints their message, without a traceback."""

from __future__ import annotations


class SettingsError(ValueError):
    """A configuration value the code cannot use; the message names the key and what is allowed."""


class RunInUseError(RuntimeError):
    """Another live process is training the same run directory; the message names it."""


class DiskFullError(OSError):
    """A write failed for want of space (or quota); the message names the folder, and the
    earlier file or folder there is left as it was (micd.atomic)."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()
