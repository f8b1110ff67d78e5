"""DST, debiased self-training (Chen et al., NeurIPS 2022), as DHC's ``code/train_dst.py`` trains it.

Two decoupled VNets (:class:`micd.nets.vnet_dst.DecoupledVNet`: one encoder, a main, a pseudo and a
worst-case decoder), the first Kaiming-, the second Xavier-initialised. Per iteration:

- ``sup``: unweighted Dice+CE (DHC's ``DC_and_CE_loss``) of each main head on the labelled half;
- ``cps``: cross pseudo supervision through the pseudo heads: each main head's per-voxel CE over
  the whole batch against the *other* network's pseudo-head argmax, kept where that head's softmax
  confidence exceeds 0.95, averaged over all voxels;
- ``worst``: DST's worst-case estimation, per network: the worst-case head's CE against the main
  head's argmax on the labelled half, times 2, plus ``-log(1 - p)`` of the main head's argmax class
  under the worst-case head's softmax on the unlabelled half. The worst-case head minimises it; its
  inputs pass a gradient reversal layer, so the encoder maximises it, with a coefficient that
  warms up from 0 towards 0.1 with the iterations.

``loss = sup + beta(t) (cps + worst)``, beta ramped to 0.1. As in DHC's script, nothing sends a
gradient to the pseudo heads (their argmax and confidence are not differentiable): they keep their
initial weights, and only their BatchNorm running statistics follow the data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from micd.methods.base import Batch, Method, Progress, StepResult
from micd.methods.losses import dice_ce, hard_labels, masked_cross_entropy
from micd.nets.vnet_dst import DecoupledVNet, warm_start_coefficient


@dataclass
class DSTSettings:
    beta_max: float = 0.1  # DHC's shell scripts: -w 0.1 -r (train_dst.py:22-23, 56-63)
    rampup_epochs: float | None = None  # None: the whole schedule (train_dst.py:59-60)
    init_a: str = "kaiming"  # kaiming_normal_init_weight(model_A), train_dst.py:228
    init_b: str = "xavier"  # xavier_normal_init_weight(model_B), train_dst.py:229
    confidence_threshold: float = 0.95  # pseudo-label mask, train_dst.py:286-287
    worst_labelled_weight: float = 2.0  # 2 * loss_l + loss_u, train_dst.py:185 (DST's eta')
    log_offset: float = 1e-6  # shift_log's offset, train_dst.py:156-160
    # WarmStartGradientReverseLayer(alpha=1.0, lo=0.0, hi=0.1, max_iters=500), vnet_dst.py:172-173,
    # stepped once per iteration (train_dst.py:308-309, vnet_dst.py:336-337)
    reversal_low: float = 0.0
    reversal_high: float = 0.1
    reversal_alpha: float = 1.0
    reversal_max_iterations: float = 500.0


def shifted_log(x: Tensor, offset: float) -> Tensor:
    """``log(min(x + offset, 1))``."""
    return torch.log(torch.clamp(x + offset, max=1.0))


def worst_case_loss(
    main_l: Tensor, worst_l: Tensor, main_u: Tensor, worst_u: Tensor, labelled_weight: float, offset: float
) -> Tensor:
    """DST's worst-case estimation (DHC's ``WorstCaseEstimationLoss``): on the labelled half the
    worst-case head's CE against the main head's argmax, on the unlabelled half the mean of
    ``-log(1 - p_worst[argmax main] + offset)``."""
    labelled = F.cross_entropy(worst_l.float(), hard_labels(main_l))
    unlabelled = F.nll_loss(shifted_log(1 - worst_u.float().softmax(1), offset), hard_labels(main_u))
    return labelled_weight * labelled + unlabelled


def confident_pseudo_labels(pseudo_logits: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    """Argmax of the pseudo head and a float mask of the voxels whose softmax maximum exceeds ``threshold``."""
    confidence, labels = pseudo_logits.detach().float().softmax(1).max(1)
    return labels, (confidence > threshold).float()


class DST(Method):
    name = "dst"
    display_name = "DST"
    Settings = DSTSettings

    def __init__(self, settings: DSTSettings, num_classes: int, network: Callable[..., nn.Module]) -> None:
        super().__init__(settings, num_classes, network)
        self.student_a: DecoupledVNet = self.new_network(settings.init_a, DecoupledVNet)
        self.student_b: DecoupledVNet = self.new_network(settings.init_b, DecoupledVNet)

    def students(self) -> dict[str, nn.Module]:
        return {"student_a": self.student_a, "student_b": self.student_b}

    def reversal_coefficient(self, progress: Progress) -> float:
        """The gradient reversal coefficient: DHC steps its layer after every iteration, so
        iteration t (from 0) runs with t steps taken; derived from the iteration, it needs no state."""
        s = self.settings
        return warm_start_coefficient(
            progress.iteration, s.reversal_low, s.reversal_high, s.reversal_alpha, s.reversal_max_iterations
        )

    def training_step(self, batch: Batch, progress: Progress) -> StepResult:
        s = self.settings
        x, y, n = batch.image, batch.label, batch.n_labelled
        reversal = self.reversal_coefficient(progress)
        main_a, pseudo_a, worst_a = self.student_a.branches(x, reversal)
        main_b, pseudo_b, worst_b = self.student_b.branches(x, reversal)
        sup = dice_ce(main_a[:n], y) + dice_ce(main_b[:n], y)
        target_a, mask_a = confident_pseudo_labels(pseudo_a, s.confidence_threshold)
        target_b, mask_b = confident_pseudo_labels(pseudo_b, s.confidence_threshold)
        # DHC's Onehot_WeightedCrossEntropyLoss
        cps = masked_cross_entropy(main_a, target_b, mask_b) + masked_cross_entropy(main_b, target_a, mask_a)
        worst = sum(
            worst_case_loss(main[:n], adv[:n], main[n:], adv[n:], s.worst_labelled_weight, s.log_offset)
            for main, adv in ((main_a, worst_a), (main_b, worst_b))
        )
        step = self.loss_terms(sup, self.consistency_weight(progress), cps=cps, worst=worst)
        step.diagnostics["confident"] = (mask_a.mean() + mask_b.mean()).detach() / 2
        step.diagnostics["reversal"] = torch.tensor(reversal)
        return step

    def predict(self, x: Tensor) -> Tensor:
        """Mean of the two main heads' logits (DHC's test.py with ``--cps AB``, as its scripts run it)."""
        return (self.student_a(x) + self.student_b(x)) / 2
