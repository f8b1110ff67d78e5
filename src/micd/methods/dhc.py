"""DHC (Wang & Li, MICCAI 2023) and its two halves: the co-training core with a named class
weighting per branch, DiffDW on A and DistDW on B (``code/train_dhc.py``; docs/protocol.md)."""

from __future__ import annotations

from dataclasses import dataclass

from micd.methods.cotraining import CoTraining, CoTrainingSettings
from micd.methods.weighting import ClassWeighting, make_weighting


@dataclass
class DHCSettings(CoTrainingSettings):
    """DHC: a DiffDW branch and a DistDW branch; any of :data:`micd.methods.weighting.WEIGHTINGS`
    may be named for either."""

    weighting_a: str = "diffdw"
    weighting_b: str = "distdw"


class DHC(CoTraining):
    name = "dhc"
    display_name = "DHC"
    Settings = DHCSettings

    def class_weightings(self) -> tuple[ClassWeighting, ClassWeighting]:
        s = self.settings
        return make_weighting(s.weighting_a, self.num_classes), make_weighting(s.weighting_b, self.num_classes)


@dataclass
class DistDWSettings(DHCSettings):
    """DHC's distribution-aware half: DistDW weights on both branches."""

    weighting_a: str = "distdw"


@dataclass
class DiffDWSettings(DHCSettings):
    """DHC's difficulty-aware half: DiffDW weights on both branches."""

    weighting_b: str = "diffdw"


class DistDWOnly(DHC):
    name, display_name, Settings = "distdw", "DistDW", DistDWSettings


class DiffDWOnly(DHC):
    name, display_name, Settings = "diffdw", "DiffDW", DiffDWSettings
