"""SS-Net (Wu et al., MICCAI 2022) as DHC's ``code/train_ssnet.py`` trains it.

One network (a VNet with projection, prediction and per-class selector heads,
:class:`micd.nets.vnet_ssnet.SSNetVNet`) and three terms per iteration:

- ``sup``: soft Dice over every class, background included, on the labelled half (DHC computes
  a cross-entropy too and leaves it out of the loss);
- ``smoothness``: VAT-style adversarial smoothness on the whole batch: the soft-Dice distance
  between the softmax on the input and on the input moved ``epsilon`` along the (per sample unit)
  direction in which one finite-difference step of size ``xi`` changes the prediction most;
- ``separation_l``, ``separation_u``: prototype-based inter-class separation. A memory keeps, per
  foreground class, up to 32 projected features of labelled voxels the network got right; each
  voxel's predicted feature (projection then prediction head) is pulled towards its class's
  memory entries by the weighted cosine distance, with the true class on the labelled half and the
  argmax on the unlabelled half, averaged over the classes.

``loss = sup + beta(t) (smoothness + 0.1 (separation_l + separation_u))`` with the Gaussian ramp-up
of beta to 0.1. Each element's source line in DHC's script is given with its setting below.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from micd.errors import SettingsError
from micd.methods.base import Batch, Method, Progress, StepResult
from micd.methods.losses import at_least_single, hard_labels, soft_dice_per_class, weighted_cross_entropy
from micd.methods.micd import frozen_batchnorm_statistics
from micd.nets.vnet_ssnet import SSNetVNet

MEMORY_KEEPS = ("lowest", "highest")


@dataclass
class SSNetSettings:
    beta_max: float = 0.1  # DHC's shell scripts: -w 0.1 -r (train_ssnet.py:22-23, 60-67)
    rampup_epochs: float | None = None  # None: the whole schedule (train_ssnet.py:63-64)
    init: str = "default"  # train_ssnet.py:331-332 leave the re-initialisation commented out
    dice_smooth: float = 1e-8  # SoftDiceLoss(smooth=1e-8, do_bg=True), train_ssnet.py:341, 429
    ce_weight: float = 0.0  # train_ssnet.py:425 computes a CE that the loss at :436 leaves out
    vat_xi: float = 10.0  # VAT3d's finite-difference step, train_ssnet.py:216
    vat_epsilon: float = 10.0  # VAT3d(epi=10.0), train_ssnet.py:342
    vat_iterations: int = 1  # power iterations (ip), train_ssnet.py:216
    vat_dice_smooth: float = 1e-8  # VAT3d's SoftDiceLoss(smooth=1e-8, do_bg=True), train_ssnet.py:221
    separation_weight: float = 0.1  # 0.1 * (labelled + unlabelled separation), train_ssnet.py:436
    memory_per_class: int = 32  # FeatureMemory(elements_per_class=32), train_ssnet.py:329
    # which features a class keeps when more than memory_per_class were predicted right: DHC's
    # ascending torch.sort keeps the lowest-scored ones (train_ssnet.py:281-286), though its
    # comment says the highest
    memory_keeps: str = "lowest"


def unit_directions(d: Tensor) -> Tensor:
    """Each sample of ``d`` divided by its L2 norm (plus 1e-8)."""
    norms = d.reshape(d.shape[0], -1).norm(dim=1).reshape(-1, *([1] * (d.dim() - 1)))
    return d / (norms + 1e-8)


def soft_dice_distance(probs: Tensor, target: Tensor, smooth: float) -> Tensor:
    """``1 - mean_c dice_c`` between two soft maps over the whole batch, every class, with the
    target as soft "one-hot" (DHC's ``SoftDiceLoss`` on two same-shaped tensors); DHC's value is
    ``-mean_c dice_c``, one less, with the same gradient."""
    axes = (0, *range(2, probs.dim()))
    probs = at_least_single(probs)  # half precision up, double kept
    target = target.to(probs.dtype)
    overlap = (probs * target).sum(axes)
    dice = (2 * overlap + smooth) / (probs.sum(axes) + target.sum(axes) + smooth + 1e-8)
    return 1 - dice.mean()


def adversarial_direction(
    net: nn.Module, x: Tensor, target: Tensor, xi: float, iterations: int, smooth: float
) -> Tensor:
    """The unit direction (per sample) that most changes ``net``'s softmax away from ``target``:
    from a random direction, ``iterations`` times the normalised gradient of the distance at
    ``x + xi d``. The weights' gradients are not touched."""
    d = unit_directions(torch.rand(x.shape, device=x.device, dtype=x.dtype) - 0.5)
    for _ in range(iterations):
        d.requires_grad_(True)
        distance = soft_dice_distance(net(x + xi * d).softmax(1), target, smooth)
        (gradient,) = torch.autograd.grad(distance, d)
        d = unit_directions(gradient.detach())
    return d


def adversarial_smoothness(
    net: nn.Module, x: Tensor, xi: float, epsilon: float, iterations: int, smooth: float
) -> Tensor:
    """VAT's local distributional smoothness with a soft-Dice distance (DHC's ``VAT3d``).

    The target is a separate no-gradient pass, which (as DHC's) updates the BatchNorm running
    statistics; the perturbed passes normalise with their batch's statistics and leave the
    running ones as they were.
    """
    with torch.no_grad():
        target = net(x).softmax(1)
    with frozen_batchnorm_statistics(net):
        d = adversarial_direction(net, x, target, xi, iterations, smooth)
        return soft_dice_distance(net(x + epsilon * d).softmax(1), target, smooth)


def _rescaled(weights: Tensor) -> Tensor:
    """Weights divided by their mean over the first axis (DHC's ``shape[0] / sum(dim=0) * w``)."""
    return weights * (weights.shape[0] / weights.sum(0))


def prototype_separation(
    features: Tensor,
    labels: Tensor,
    memory: "PrototypeMemory",
    feature_selectors: nn.ModuleList,
    memory_selectors: nn.ModuleList,
) -> Tensor:
    """Weighted cosine distance of each feature to its class's memory entries, per class the mean
    over (feature, entry) pairs, summed and divided by the number of classes (DHC's
    ``contrastive_class_to_class_learned_memory``).

    A class counts when it has more than one feature and more than one memory entry. A pair's
    distance is weighted by the feature's selector score (sigmoid, divided by its mean over the
    class's features; the selector reads the features detached) and by the entry's; DHC divides
    the entries' scores by their mean over an axis of length one, so those weights are all one
    (up to rounding) and the memory selectors learn nothing: kept as DHC has it.
    """
    num_classes = len(feature_selectors)
    total = torch.zeros((), device=features.device)
    for c in range(num_classes):
        entries = memory.entries(c)
        chosen = features[labels == c]
        if entries.shape[0] <= 1 or chosen.shape[0] <= 1:
            continue
        entries = F.normalize(entries, dim=1)
        distances = 1 - F.normalize(chosen, dim=1) @ entries.T  # (features, entries)
        feature_weights = _rescaled(torch.sigmoid(feature_selectors[c](chosen.detach())))  # (features, 1)
        entry_weights = _rescaled(torch.sigmoid(memory_selectors[c](entries)).T)  # (1, entries): ones
        total = total + (distances * feature_weights * entry_weights).float().mean()
    return total / num_classes


class PrototypeMemory(nn.Module):
    """Per class up to ``capacity`` feature vectors, in buffers so that checkpoints carry them.

    Each update replaces a class's entries by the features it is given for that class (all of
    them, or ``capacity`` chosen by the class's selector score when there are more); a class
    given none keeps its entries.
    """

    def __init__(self, num_classes: int, capacity: int, width: int, keep: str = "lowest") -> None:
        super().__init__()
        if keep not in MEMORY_KEEPS:
            raise SettingsError(f"ssnet memory_keeps must be one of {list(MEMORY_KEEPS)}, got {keep!r}")
        self.capacity, self.keep = capacity, keep
        self.register_buffer("features", torch.zeros(num_classes, capacity, width))
        self.register_buffer("sizes", torch.zeros(num_classes, dtype=torch.long))

    def entries(self, c: int) -> Tensor:
        return self.features[c, : int(self.sizes[c])]

    @torch.no_grad()
    def update(self, features: Tensor, labels: Tensor, selectors: nn.ModuleList) -> None:
        for c in range(self.features.shape[0]):
            chosen = features[labels == c]
            if chosen.shape[0] == 0:
                continue
            if chosen.shape[0] > self.capacity:
                scores = torch.sigmoid(selectors[c](chosen))[:, 0]
                order = torch.sort(scores, descending=self.keep == "highest").indices
                chosen = chosen[order[: self.capacity]]
            self.features[c, : chosen.shape[0]] = chosen.float()
            self.sizes[c] = chosen.shape[0]


class SSNet(Method):
    name = "ssnet"
    display_name = "SS-Net"
    Settings = SSNetSettings
    training_only_state = ("memory.",)  # the prototypes only serve the training loss

    def __init__(self, settings: SSNetSettings, num_classes: int, network: Callable[..., nn.Module]) -> None:
        super().__init__(settings, num_classes, network)
        self.net: SSNetVNet = self.new_network(settings.init, SSNetVNet)
        self.memory = PrototypeMemory(
            num_classes, settings.memory_per_class, self.net.projection_head[-1].out_features, settings.memory_keeps
        )

    def students(self) -> dict[str, nn.Module]:
        return {"net": self.net}

    def predicted_features(self, embedding: Tensor) -> Tensor:
        """Voxel features (N, n_filters) through the projection and prediction heads."""
        return self.net.prediction_head(self.net.projection_head(embedding))

    def remember(self, embedding: Tensor, logits: Tensor, labels: Tensor) -> None:
        """Memory update from the labelled voxels predicted right as a foreground class, projected
        with the projection head in eval mode (its BatchNorm on running statistics)."""
        right = (hard_labels(logits) == labels) & (labels > 0)
        if not bool(right.any()):
            return
        head = self.net.projection_head
        was_training = head.training
        head.eval()
        with torch.no_grad():
            projected = head(embedding.detach()[right])
        head.train(was_training)
        self.memory.update(projected, labels[right], self.net.feature_selectors)

    def separation(self, features: Tensor, labels: Tensor) -> Tensor:
        return prototype_separation(
            features, labels.reshape(-1), self.memory, self.net.feature_selectors, self.net.memory_selectors
        )

    def training_step(self, batch: Batch, progress: Progress) -> StepResult:
        s = self.settings
        x, y, n = batch.image, batch.label, batch.n_labelled
        logits, embedding = self.net.logits_and_embedding(x)
        voxels = embedding.permute(0, 2, 3, 4, 1)  # (B, D, H, W, n_filters)
        self.remember(voxels[:n], logits[:n], y)
        width = voxels.shape[-1]
        separation_l = self.separation(self.predicted_features(voxels[:n].reshape(-1, width)), y)
        separation_u = self.separation(self.predicted_features(voxels[n:].reshape(-1, width)), hard_labels(logits[n:]))
        sup = 1 - soft_dice_per_class(logits[:n], y, s.dice_smooth).mean()
        if s.ce_weight:
            sup = sup + s.ce_weight * weighted_cross_entropy(logits[:n], y)
        smoothness = adversarial_smoothness(self.net, x, s.vat_xi, s.vat_epsilon, s.vat_iterations, s.vat_dice_smooth)
        beta = self.consistency_weight(progress)
        loss = sup + beta * (smoothness + s.separation_weight * (separation_l + separation_u))
        losses = {"smoothness": smoothness, "separation_l": separation_l, "separation_u": separation_u}
        return StepResult(
            {"loss": loss, "sup": sup.detach(), **{name: term.detach() for name, term in losses.items()}},
            {"beta": torch.tensor(beta)},
        )

    def predict(self, x: Tensor) -> Tensor:
        return self.net(x)
