"""Organ classes of the data sets, with the label ids the archives use.

Short names are the column headers of DHC's and MICD's tables
(``../shared/reference/published_dhc_tables.csv``).
"""

from __future__ import annotations

from dataclasses import dataclass

from micd.errors import SettingsError


@dataclass(frozen=True)
class OrganClass:
    label: int
    name: str
    short: str


AMOS_CLASSES: tuple[OrganClass, ...] = (
    OrganClass(0, "background", "Bg"),
    OrganClass(1, "spleen", "Sp"),
    OrganClass(2, "right kidney", "RK"),
    OrganClass(3, "left kidney", "LK"),
    OrganClass(4, "gallbladder", "Ga"),
    OrganClass(5, "esophagus", "Es"),
    OrganClass(6, "liver", "Li"),
    OrganClass(7, "stomach", "St"),
    OrganClass(8, "aorta", "Ao"),
    OrganClass(9, "inferior vena cava", "IVC"),
    OrganClass(10, "pancreas", "PA"),
    OrganClass(11, "right adrenal gland", "RAG"),
    OrganClass(12, "left adrenal gland", "LAG"),
    OrganClass(13, "duodenum", "Du"),
    OrganClass(14, "bladder", "Bl"),
    OrganClass(15, "prostate/uterus", "P/U"),
)

SYNAPSE_CLASSES: tuple[OrganClass, ...] = (
    OrganClass(0, "background", "Bg"),
    OrganClass(1, "spleen", "Sp"),
    OrganClass(2, "right kidney", "RK"),
    OrganClass(3, "left kidney", "LK"),
    OrganClass(4, "gallbladder", "Ga"),
    OrganClass(5, "esophagus", "Es"),
    OrganClass(6, "liver", "Li"),
    OrganClass(7, "stomach", "St"),
    OrganClass(8, "aorta", "Ao"),
    OrganClass(9, "inferior vena cava", "IVC"),
    OrganClass(10, "portal and splenic veins", "PSV"),
    OrganClass(11, "pancreas", "PA"),
    OrganClass(12, "right adrenal gland", "RAG"),
    OrganClass(13, "left adrenal gland", "LAG"),
)

# The synthetic phantom mimics AMOS, so it shares AMOS's classes.
CLASSES_BY_FAMILY: dict[str, tuple[OrganClass, ...]] = {
    "amos": AMOS_CLASSES,
    "synthetic": AMOS_CLASSES,
    "synapse": SYNAPSE_CLASSES,
}


def classes_for(family: str) -> tuple[OrganClass, ...]:
    """The classes (background first) of a data-set family: ``amos``, ``synapse`` or ``synthetic``."""
    try:
        return CLASSES_BY_FAMILY[family]
    except KeyError:
        raise SettingsError(
            f"unknown data-set family {family!r}; expected one of {sorted(CLASSES_BY_FAMILY)}"
        ) from None
