"""Co-training baselines that are MICD's branch pair with parts switched off.

With masking, cross feature consistency and cross model discrepancy off, MICD's masked cross
pseudo consistency is cross pseudo supervision on clean inputs, so these rows share every
line of their training step with MICD and differ from it only in their settings' defaults.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from micd.methods.micd import MICD, MICDSettings
from micd.methods.weighting import LabelledFrequency


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


@dataclass
class CLDSettings(CPSSettings):
    """CLD (Lin et al., MICCAI 2022), reconstructed: CPS whose losses weight each class by its
    labelled-set rarity, ``(max N / N_c)^weight_power``, and whose labelled patches are centred
    on a class with probability proportional to the same weight (probability-aware cropping)."""

    weight_power: float = 1 / 3  # reconstruction choice
    weighted_sampling: bool = True


class CLD(MICD):
    name = "cld"
    Settings = CLDSettings

    def __init__(self, settings: CLDSettings, num_classes: int, network: Callable[[], nn.Module]) -> None:
        super().__init__(settings, num_classes, network)
        self.weighting_a = LabelledFrequency(num_classes, settings.weight_power)
        self.weighting_b = LabelledFrequency(num_classes, settings.weight_power)

    def patch_label_probabilities(self) -> dict[int, float] | None:
        if not self.settings.weighted_sampling:
            return None
        return {c: float(w) for c, w in enumerate(self.weighting_a.weights)}
