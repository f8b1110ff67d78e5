"""Settings the two-branch rows had until they were built from parts (issue 28), and no longer have.

Until then DHC, its halves, CPS, CLD, DePL, Adsh, CReST and SimiS carried all of MICD's settings;
model files saved then list them all. :func:`current_settings` drops each retired key whose saved
value is one under which it computed nothing for that method (any value, where the method never
read it), and refuses a model trained with a value that did compute something, naming it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from micd.errors import SettingsError

ANY = object()  # the method never read the key: every value computed the same

# MICD's masking, CFC and CMD switched off, as the two-branch rows had them
_PARTS_OFF: dict[str, Any] = {
    "mcpc": True,  # False dropped the cross term
    "cfc": False,
    "cmd": False,
    "masking": False,
    "inference": "students",
    **dict.fromkeys(("mask_ratio", "mask_block", "mcpc_direction", "feature_distance", "feature_weights"), ANY),
    "ema_decay": ANY,
}
_DHC = {**_PARTS_OFF, "heterogeneous": True}  # its weighting_a, weighting_b are still settings
_UNIFORM = {**_PARTS_OFF, "heterogeneous": False, "weighting_a": ANY, "weighting_b": ANY}
_OWN_WEIGHTS = {**_PARTS_OFF, "heterogeneous": ANY, "weighting_a": ANY, "weighting_b": ANY}

RETIRED: dict[str, dict[str, Any]] = {
    "dhc": _DHC,
    "distdw": _DHC,
    "diffdw": _DHC,
    "cps": _UNIFORM,
    "depl": _UNIFORM,
    "adsh": _UNIFORM,
    "cld": _OWN_WEIGHTS,
    "crest": _OWN_WEIGHTS,
    "simis": _OWN_WEIGHTS,
}


def current_settings(method: str, saved: Mapping[str, Any] | None) -> dict[str, Any]:
    """``saved`` (a model file's settings of ``method``) without the keys it no longer has."""
    retired = RETIRED.get(method, {})
    kept, refused = {}, []
    for key, value in (saved or {}).items():
        if key not in retired:
            kept[key] = value
        elif retired[key] is not ANY and value != retired[key]:
            refused.append(f"{key}: {value!r}")
    if refused:
        raise SettingsError(
            f"this {method} model was trained with settings {method} no longer has ({', '.join(refused)}); "
            "train it again"
        )
    return kept
