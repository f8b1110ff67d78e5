"""Training methods, registered by name. Adding a method: write its module, add it below."""

from __future__ import annotations

from typing import Any

from micd.methods.base import Batch, Method, Progress, settings_from_dict
from micd.methods.cotraining import CLD, CPS, DHC, DiffDWOnly, DistDWOnly
from micd.methods.mean_teacher import UAMT, MeanTeacher
from micd.methods.micd import MICD
from micd.methods.supervised import Fully, Supervised

# The registry: one line per method.
METHODS: dict[str, type[Method]] = {
    cls.name: cls
    for cls in (Supervised, Fully, MeanTeacher, UAMT, CPS, CLD, DHC, DistDWOnly, DiffDWOnly, MICD)
}


def build_method(
    name: str, settings: dict[str, Any] | None, num_classes: int, n_filters: int
) -> Method:
    """Instantiate a registered method from its config settings."""
    try:
        cls = METHODS[name]
    except KeyError:
        raise ValueError(
            f"unknown method {name!r}; registered methods: {sorted(METHODS)}"
        ) from None
    return cls(settings_from_dict(cls.Settings, settings, name), num_classes, n_filters)


__all__ = ["METHODS", "Batch", "Method", "Progress", "build_method"]
