"""Training methods, registered by name. Adding a method: write its module, add it below."""

from __future__ import annotations

from functools import partial
from typing import Any

from micd.errors import SettingsError
from micd.methods.acisis import ACISIS
from micd.methods.base import Batch, Method, Progress, StepResult, settings_from_dict
from micd.methods.cld import CLD
from micd.methods.cotraining import CPS
from micd.methods.depl_adsh import Adsh, DePL
from micd.methods.dhc import DHC, DiffDWOnly, DistDWOnly
from micd.methods.dst import DST
from micd.methods.ga import GACPS
from micd.methods.mean_teacher import UAMT, MeanTeacher
from micd.methods.micd import MICD, ablation_display_name
from micd.methods.rebalancing import CReST, SimiS
from micd.methods.retired import current_settings
from micd.methods.ssnet import SSNet
from micd.methods.stac import DHCSTAC
from micd.methods.supervised import Fully, Supervised
from micd.methods.urpc import URPC
from micd.nets import VNet

# The registry: one line per method, in the row order of DHC's tables.
METHODS: dict[str, type[Method]] = {
    cls.name: cls
    for cls in (
        Fully,
        Supervised,
        MeanTeacher,
        UAMT,
        URPC,
        CPS,
        SSNet,
        DST,
        DePL,
        Adsh,
        CReST,
        SimiS,
        ACISIS,
        CLD,
        DHC,
        DistDWOnly,
        DiffDWOnly,
        GACPS,
        DHCSTAC,
        MICD,
    )
}


def display_name(name: str) -> str:
    """How tables show a method or variant: the paper's name of a registered method (as DHC's
    published rows spell it), the terms of a built-in ablation row, a variant's own name otherwise."""
    cls = METHODS.get(name)
    if cls is not None:
        return cls.display_name
    return ablation_display_name(name) or name


def trains_on_every_case(name: str) -> bool:
    """Whether a registered method ignores the labelled split and trains on every training case:
    the upper bound, whose run is the same at every ratio."""
    cls = METHODS.get(name)
    return cls is not None and cls.labelled_set == "train"


def build_method(
    name: str,
    settings: dict[str, Any] | None,
    num_classes: int,
    n_filters: int,
    dropout: float = 0.5,
    saved: bool = False,
) -> Method:
    """Instantiate a registered method from its config settings, on the protocol's VNet.

    ``saved``: the settings come from a model file, which may carry settings the method had when
    it was trained and has no longer (:mod:`micd.methods.retired`)."""
    try:
        cls = METHODS[name]
    except KeyError:
        raise SettingsError(f"unknown method {name!r}; registered methods: {sorted(METHODS)}") from None
    if saved:
        settings = current_settings(name, settings)
    network = partial(VNet, num_classes, n_filters=n_filters, dropout=dropout)
    return cls(settings_from_dict(cls.Settings, settings, name), num_classes, network)


__all__ = [
    "METHODS",
    "Batch",
    "Method",
    "Progress",
    "StepResult",
    "build_method",
    "display_name",
    "trains_on_every_case",
]
