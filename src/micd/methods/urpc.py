"""URPC: uncertainty-rectified pyramid consistency (Luo et al., MICCAI 2021), as DHC's
``code/train_urpc.py`` trains it (docs/protocol.md).

One 3-D UNet with a segmentation head on each of its four decoder stages (``nets.unet_ds``).
Every head is supervised on the labelled half with ``(CE + soft Dice) / 2``; on the unlabelled
half each head's softmax is pulled towards the mean of the four, voxels weighted by
``exp(-KL(mean || head))``, the head's disagreement with the mean acting as its uncertainty.
No gradient is stopped: the mean and the weights carry gradients, as in DHC.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from micd.methods.base import Batch, Method, Progress, StepResult
from micd.methods.losses import dice_ce
from micd.nets.derived import network_option
from micd.nets.unet_ds import DHC_DROPOUT, DHC_WIDTH, UNetDS

NORMALISATION_EPS = 1e-8  # train_urpc.py:273: mean(d * w) / (mean(w) + 1e-8)


@dataclass
class URPCSettings:
    beta_max: float = 0.1  # -w 0.1 (README.md:68, train3times_seeds_*.sh:27); train_urpc.py:22 default 1
    rampup_epochs: float | None = None  # -r, -cr unset: over max_epoch (train_urpc.py:23-24, 57-64, 320)
    dice_smooth: float = 1e-8  # train_urpc.py:189 SoftDiceLoss(smooth=1e-8)
    # first-stage channels of the UNet (train_urpc.py:127 keeps unet_ds.py:126, 133-134's
    # feature_scale 4: 64 / 4 = 16);
    # None: half of train.n_filters, which is DHC's 16 at the protocol's n_filters 32
    width: int | None = None
    dropout: list[float] = field(default_factory=lambda: list(DHC_DROPOUT))  # unet_ds.py:172-175
    init: str = "kaiming"  # unet_ds.py:86-88, 177-182, the model's own; train_urpc.py:177-179 add none


def unet_width(settings: URPCSettings, network: Callable[..., nn.Module]) -> int:
    if settings.width is not None:
        return settings.width
    n_filters = network_option(network, "n_filters")
    return DHC_WIDTH if n_filters is None else max(n_filters // 2, 1)


def rectified_consistency(probs: list[Tensor]) -> Tensor:
    """URPC's unsupervised term over the heads' softmax outputs (each (B, C, D, H, W)).

    With ``m`` the mean of the heads, per head ``v = sum_c m_c log(m_c / p_c)`` (KL(m || p),
    per voxel) and ``w = exp(-v)``; the head's term is ``mean((m - p)^2 w) / (mean(w) + 1e-8)
    + mean(v)``, the first mean over classes and voxels, the others over voxels; the result is
    the mean over heads.
    """
    mean = sum(probs) / len(probs)
    total = torch.zeros((), device=mean.device)
    for p in probs:
        variance = F.kl_div(torch.log(p), mean, reduction="none").sum(1, keepdim=True)
        certainty = torch.exp(-variance)
        rectified = ((mean - p) ** 2 * certainty).mean() / (certainty.mean() + NORMALISATION_EPS)
        total = total + rectified + variance.mean()
    return total / len(probs)


class URPC(Method):
    name = "urpc"
    display_name = "URPC"
    Settings = URPCSettings

    def __init__(self, settings: URPCSettings, num_classes: int, network: Callable[..., nn.Module]) -> None:
        # ``network`` builds the protocol's VNet, which URPC does not use; it may give the width
        super().__init__(settings, num_classes, network)
        self.net = UNetDS(
            num_classes, width=unet_width(settings, network), dropout=settings.dropout, init=settings.init
        )

    def students(self) -> dict[str, nn.Module]:
        return {"net": self.net}

    def supervised_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        """``CE + soft Dice loss`` of one head, unweighted, Dice over the foreground classes.

        DHC's Dice term is ``-mean dice``; ours ``1 - mean dice``: the same gradient."""
        return dice_ce(logits, labels, smooth=self.settings.dice_smooth)

    def training_step(self, batch: Batch, progress: Progress) -> StepResult:
        n = batch.n_labelled
        main, auxiliary = self.net(batch.image, return_auxiliary=True)
        outputs = [main, *auxiliary]
        # DHC: (four CE + four Dice) / 8
        sup = sum(self.supervised_loss(o[:n], batch.label) for o in outputs) / (2 * len(outputs))
        consistency = rectified_consistency([o[n:].float().softmax(1) for o in outputs])
        return self.loss_terms(sup, self.consistency_weight(progress), consistency=consistency)

    def predict(self, x: Tensor) -> Tensor:
        return self.net(x)
