"""Co-training baselines that are MICD's branch pair with parts switched off.

With masking, cross feature consistency and cross model discrepancy off, MICD's masked cross
pseudo consistency is cross pseudo supervision on clean inputs, so these rows share every
line of their training step with MICD and differ from it only in their settings' defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

from micd.methods.micd import MICD, MICDSettings


@dataclass
class DHCSettings(MICDSettings):
    """DHC (Wang & Li, MICCAI 2023): DiffDW branch and DistDW branch, cross pseudo supervision."""

    masking: bool = False
    cfc: bool = False
    cmd: bool = False


class DHC(MICD):
    name = "dhc"
    Settings = DHCSettings


@dataclass
class DistDWSettings(DHCSettings):
    """DHC's distribution-aware half: DistDW weights on both branches."""

    weighting_a: str = "distdw"


class DistDWOnly(MICD):
    name = "distdw"
    Settings = DistDWSettings


@dataclass
class DiffDWSettings(DHCSettings):
    """DHC's difficulty-aware half: DiffDW weights on both branches."""

    weighting_b: str = "diffdw"


class DiffDWOnly(MICD):
    name = "diffdw"
    Settings = DiffDWSettings


@dataclass
class CPSSettings(DHCSettings):
    """CPS (Chen et al., CVPR 2021): two differently initialised networks, each supervised by
    the other's hard pseudo-labels, with uniform class weights."""

    heterogeneous: bool = False


class CPS(MICD):
    name = "cps"
    Settings = CPSSettings
