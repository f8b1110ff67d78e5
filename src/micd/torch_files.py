"""Reading the PyTorch files micd writes (``model.pt``, ``state/checkpoint.pt``) without running code.

``torch.load`` unpickles; a pickle can name any Python function to call, so a shared file could
run code on load. Every file is loaded with ``weights_only=True``: tensors, numbers, strings,
lists, tuples, dicts and None, nothing else. A file that does not load so is refused with
:class:`UnreadableTorchFile`, naming the file and why; it is never loaded another way.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

from micd.errors import DataError

ZIP_MAGIC = b"PK\x03\x04"  # every file torch.save has written since PyTorch 1.6 is a zip archive


class UnreadableTorchFile(DataError):
    """A file that is not a PyTorch file, is damaged, or holds objects that loading would run as code."""


def load_weights_only(path: Path, map_location: Any = "cpu", expected: str = "a micd model file") -> Any:
    """What ``path`` holds, loaded with ``weights_only=True``; ``expected`` names what it should be
    in the error (e.g. "a micd model file", "a training checkpoint")."""
    import torch

    path = Path(path)
    if path.is_dir():
        raise UnreadableTorchFile(f"{path} is not {expected} (a PyTorch file): it is a folder")
    with open(path, "rb") as f:  # a missing file stays FileNotFoundError
        start = f.read(len(ZIP_MAGIC))
    if start != ZIP_MAGIC:
        found = "it is empty" if not start else "it does not start as a PyTorch file (a zip archive) does"
        raise UnreadableTorchFile(f"{path} is not {expected} (a PyTorch file): {found}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnreadableTorchFile(_unsafe_reason(path, expected, str(exc))) from None
    except (RuntimeError, EOFError, KeyError, ValueError, OSError) as exc:
        detail = (str(exc).splitlines() or [type(exc).__name__])[0].split(". This is an internal miniz error")[0]
        raise UnreadableTorchFile(
            f"{path} is not {expected} that can be read: it is truncated or damaged ({detail})"
        ) from None


def _unsafe_reason(path: Path, expected: str, message: str) -> str:
    found = re.search(r"GLOBAL (\S+)", message)
    what = f"the Python object {found.group(1)}" if found else "a Python object that is not a tensor or plain value"
    return (
        f"refusing {path}: it holds {what}, which loading would run as code, and micd loads only tensors "
        f"and plain values; it is not {expected} written by this micd (it may have been tampered with or "
        "written by another program or an older micd)"
    )
