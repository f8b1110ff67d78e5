"""MICD: Masked Image Consistency and Discrepancy learning (reconstruction, see docs/micd_reconstruction.md).

Two heterogeneous students (A weighted by DiffDW, B by DistDW) and, for CMD, an EMA teacher
each. Per iteration: clean forward of both students; block-masked forward of both; the terms

- ``sup``:  Dice+CE of each student on the labelled half, with its class weights;
- ``mcpc``: masked cross pseudo consistency over the whole batch: by default the paper's
  Eq. (3) read literally, CE of each student's clean prediction against the other student's
  argmax on the masked input (``mcpc_direction: clean_prediction``); ``masked_prediction``
  trains each masked prediction on the other student's clean argmax instead;
- ``cfc``:  cross feature consistency: KL divergence between the channel softmax of the
  students' four decoder-stage features on the masked input;
- ``cmd``:  cross model discrepancy, CE of each student's masked prediction against its own
  teacher's clean argmax;

``loss = sup + beta(t) (mcpc + cfc + cmd)`` with a Gaussian ramp-up of beta. The masked passes
normalise with their own batch statistics but leave the BatchNorm running averages (used at
inference and copied into the teachers) to the clean pass. MICD is :class:`~micd.methods.dhc.DHC`
(the co-training core with DiffDW and DistDW) plus these parts; with masking, CFC and CMD
switched off it computes DHC's step, and rows without CMD build no teachers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from micd.errors import SettingsError
from micd.methods.base import Batch, Progress, StepResult
from micd.methods.cotraining import cross_pseudo_supervision
from micd.methods.dhc import DHC, DHCSettings
from micd.methods.losses import at_least_single, hard_labels, weighted_cross_entropy
from micd.methods.teachers import EMATeacher, make_teacher
from micd.methods.weighting import ClassWeighting

MCPC_DIRECTIONS = ("masked_prediction", "clean_prediction")

ABLATION_VARIANTS: dict[str, dict[str, bool]] = {
    "micd_mcpc": {"cfc": False, "cmd": False},
    "micd_mcpc_cfc": {"cmd": False},
    "micd_mcpc_cmd": {"cfc": False},
}
"""The rows of MICD's ablation table between ``dhc`` and ``micd``, as settings of ``micd``;
the workflow knows them by these names wherever a method name is expected."""


def ablation_display_name(name: str) -> str | None:
    """How tables and figures show a row of :data:`ABLATION_VARIANTS`, e.g. "MICD (MCPC+CFC)":
    MICD with only the terms it keeps (masking on); None for any other name."""
    if name not in ABLATION_VARIANTS:
        return None
    kept = [term.upper() for term in ("mcpc", "cfc", "cmd") if ABLATION_VARIANTS[name].get(term, True)]
    return f"MICD ({'+'.join(kept)})"


def builtin_variants() -> dict[str, dict]:
    """:data:`ABLATION_VARIANTS` as workflow variants (``{"method": "micd", "settings": ...}``)."""
    return {name: {"method": "micd", "settings": dict(settings)} for name, settings in ABLATION_VARIANTS.items()}


@dataclass
class MICDSettings(DHCSettings):
    """DHC's settings and those of MICD's masking, its three terms and its teachers."""

    mcpc: bool = True
    cfc: bool = True
    cmd: bool = True
    masking: bool = True
    mask_ratio: float = 0.5  # reconstruction choice: fraction of blocks masked
    mask_block: int = 16  # reconstruction choice: block edge in voxels, every axis
    # reconstruction choice, see MCPC_DIRECTIONS; chosen on the benchmark's eval split (docs/micd_reconstruction.md)
    mcpc_direction: str = "clean_prediction"
    feature_distance: str = "kl"  # see FEATURE_DISTANCES
    feature_weights: list[float] = field(default_factory=lambda: [0.25, 0.25, 0.25, 0.25])
    heterogeneous: bool = True  # False: uniform class weights on both branches
    ema_decay: float = 0.99
    inference: str = "students"  # or "teachers"


def mask_sensitivity_variants(
    mask_ratios: Sequence[float], mask_blocks: Sequence[int], configured: Mapping[str, Any]
) -> dict[str, dict]:
    """The mask-sensitivity grid as named MICD variants, e.g. ``micd_mask30_block8``; the cell
    of the configured mask (``configured``: MICD's settings) is the ``micd`` run itself, not
    trained twice."""
    settings = {**asdict(MICDSettings()), **configured}

    def name(ratio: float, block: int) -> str:
        if (ratio, block) == (settings["mask_ratio"], settings["mask_block"]):
            return "micd"
        return f"micd_mask{round(ratio * 100)}_block{block}"

    return {
        name(ratio, block): {"method": "micd", "settings": {"mask_ratio": ratio, "mask_block": block}}
        for ratio in mask_ratios
        for block in mask_blocks
    }


def block_mask(
    shape: tuple[int, ...],
    block: int,
    ratio: float,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Per-sample binary mask (1 = kept) made of ``block``-voxel cubes, each masked with prob. ``ratio``.

    ``shape`` is (B, C, D, H, W); the mask has shape (B, 1, D, H, W).
    """
    batch, spatial = shape[0], shape[2:]
    coarse_shape = [batch, 1, *(-(-s // block) for s in spatial)]
    keep = (torch.rand(coarse_shape, generator=generator) >= ratio).float()
    fine = keep
    for axis in range(2, 5):
        fine = fine.repeat_interleave(block, dim=axis)
    return fine[:, :, : spatial[0], : spatial[1], : spatial[2]].to(device)


@contextmanager
def frozen_batchnorm_statistics(*nets: nn.Module) -> Iterator[None]:
    """Forward passes inside leave every BatchNorm's running mean and variance as they were.

    In training mode the layers still normalise with the batch's own statistics; a momentum of
    0 makes the running update ``(1 - 0) * running + 0 * batch`` a no-op.
    """
    layers = [m for net in nets for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [layer.momentum for layer in layers]
    tracked = [layer.num_batches_tracked.clone() for layer in layers if layer.num_batches_tracked is not None]
    for layer in layers:
        layer.momentum = 0.0
    try:
        yield
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
        counted = [layer for layer in layers if layer.num_batches_tracked is not None]
        for layer, count in zip(counted, tracked):
            layer.num_batches_tracked.copy_(count)


def _kl_over_channels(a: Tensor, b: Tensor) -> Tensor:
    """``KL(softmax a || softmax b)`` over the channel axis, summed over channels, per voxel."""
    log_a, log_b = F.log_softmax(a, dim=1), F.log_softmax(b, dim=1)
    return (log_a.exp() * (log_a - log_b)).sum(1)


def _kl(a: Tensor, b: Tensor) -> Tensor:
    return _kl_over_channels(a, b).mean()


def _symmetric_kl(a: Tensor, b: Tensor) -> Tensor:
    return (_kl_over_channels(a, b) + _kl_over_channels(b, a)).mean() / 2


def _normalised_mse(a: Tensor, b: Tensor) -> Tensor:
    return F.mse_loss(F.normalize(a, dim=1), F.normalize(b, dim=1))


def _cosine(a: Tensor, b: Tensor) -> Tensor:
    return (1 - F.cosine_similarity(a, b, dim=1)).mean()


# Distances between two feature maps (B, C, ...), over channels, averaged over voxels. The KL
# forms sum over channels; "mse" also averages over channels, which makes it hundreds of times
# smaller than the other terms (kept to reproduce the earlier reconstruction).
FEATURE_DISTANCES = {"kl": _symmetric_kl, "kl_one_sided": _kl, "mse": _normalised_mse, "cosine": _cosine}


def feature_distance(a: Tensor, b: Tensor, kind: str) -> Tensor:
    return FEATURE_DISTANCES[kind](at_least_single(a), at_least_single(b))


class MICD(DHC):
    """DHC's co-training with MICD's parts: the block mask, the masked cross pseudo consistency,
    the cross feature consistency and, with its EMA teachers, the cross model discrepancy."""

    name = "micd"
    display_name = "MICD"
    Settings = MICDSettings

    def __init__(self, settings: MICDSettings, num_classes: int, network: Callable[..., nn.Module]) -> None:
        if settings.feature_distance not in FEATURE_DISTANCES:
            raise SettingsError(
                f"unknown feature_distance {settings.feature_distance!r}; expected one of {sorted(FEATURE_DISTANCES)}"
            )
        if len(settings.feature_weights) != 4:
            raise SettingsError(
                f"feature_weights needs one weight per decoder stage (4), got {settings.feature_weights}"
            )
        if settings.inference not in ("students", "teachers"):
            raise SettingsError(f"inference must be 'students' or 'teachers', got {settings.inference!r}")
        if settings.mcpc_direction not in MCPC_DIRECTIONS:
            raise SettingsError(
                f"mcpc_direction must be one of {list(MCPC_DIRECTIONS)}, got {settings.mcpc_direction!r}"
            )
        super().__init__(settings, num_classes, network)
        # the ablation rows without CMD train no teachers
        self.has_teachers = settings.cmd or settings.inference == "teachers"
        if self.has_teachers:
            self.teacher_a = make_teacher(self.student_a)
            self.teacher_b = make_teacher(self.student_b)
        self.ema = EMATeacher(self.name, settings.ema_decay)

    def class_weightings(self) -> tuple[ClassWeighting, ClassWeighting]:
        if self.settings.heterogeneous:
            return super().class_weightings()
        return ClassWeighting(self.num_classes), ClassWeighting(self.num_classes)

    def teachers(self) -> list[nn.Module]:
        return [self.teacher_a, self.teacher_b] if self.has_teachers else []

    def masked_cross_pseudo_loss(
        self, p_a: Tensor, p_b: Tensor, q_a: Tensor, q_b: Tensor, w_a: Tensor, w_b: Tensor
    ) -> Tensor:
        """Cross pseudo supervision between the clean (p) and masked (q) predictions: which learns
        and which teaches is ``mcpc_direction``; without masking both are the clean ones."""
        if self.settings.mcpc_direction == "masked_prediction":
            return cross_pseudo_supervision(q_a, q_b, p_a, p_b, w_a, w_b)
        return cross_pseudo_supervision(p_a, p_b, q_a, q_b, w_a, w_b)

    def training_step(self, batch: Batch, progress: Progress) -> StepResult:
        s = self.settings
        x = batch.image
        clean_features = s.cfc and not s.masking
        p_a, f_a = self.student_a(x, return_features=True) if clean_features else (self.student_a(x), None)
        p_b, f_b = self.student_b(x, return_features=True) if clean_features else (self.student_b(x), None)
        w_a, w_b = self.class_weights(p_a, p_b, batch)
        sup = self.supervised_loss(p_a, p_b, batch, w_a, w_b)

        terms: dict[str, Tensor] = {}
        if s.masking and (s.mcpc or s.cfc or s.cmd):
            mask = block_mask(tuple(x.shape), s.mask_block, s.mask_ratio, device=x.device)
            with frozen_batchnorm_statistics(self.student_a, self.student_b):
                q_a, f_a = self.student_a(x * mask, return_features=True)
                q_b, f_b = self.student_b(x * mask, return_features=True)
        else:
            q_a, q_b = p_a, p_b
        if s.mcpc:
            # without masking the term is plain cross pseudo supervision
            terms["mcpc" if s.masking else "cps"] = self.masked_cross_pseudo_loss(p_a, p_b, q_a, q_b, w_a, w_b)
        if s.cfc:
            terms["cfc"] = sum(
                weight * feature_distance(fa, fb, s.feature_distance)
                for weight, fa, fb in zip(s.feature_weights, f_a, f_b)
            )
        if s.cmd:
            with torch.no_grad():
                t_a, t_b = self.teacher_a(x), self.teacher_b(x)
            terms["cmd"] = weighted_cross_entropy(q_a, hard_labels(t_a)) + weighted_cross_entropy(q_b, hard_labels(t_b))
        return self.loss_terms(sup, self.consistency_weight(progress), **terms)

    def after_step(self, progress: Progress) -> None:
        if self.has_teachers:
            self.ema.follow(self.teacher_a, self.student_a, progress)
            self.ema.follow(self.teacher_b, self.student_b, progress)

    def predict(self, x: Tensor) -> Tensor:
        if self.settings.inference == "teachers":
            return (self.teacher_a(x) + self.teacher_b(x)) / 2
        return super().predict(x)
