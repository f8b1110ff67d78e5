"""DePL and Adsh: cross pseudo supervision whose pseudo-labels are corrected for class imbalance.

Both are CPS (:class:`~micd.methods.cotraining.CPS`: A Kaiming-, B Xavier-initialised, uniform
class weights, i.e. DHC's unweighted ``make_loss_function('w_ce+dice')`` on the labelled half, each
branch trained on the other's pseudo-labels over the whole batch, inference on the mean of both
branches' logits) and differ from it only in their cross loss, in which pseudo-labels teach:

- DePL (debiased pseudo-labelling) removes from each branch's logits the log of a running mean of
  its own predicted class distribution, per voxel of the patch (``qhat``), takes the argmax of
  that debiased softmax as the pseudo-label, and keeps only voxels where its maximum reaches 0.9;
- Adsh (adaptive thresholding) keeps, per class, a threshold chosen so that every class passes
  it as often, relative to how often it is predicted, as the majority class passes a fixed 0.9;
  each branch's logits are multiplied by the other branch's map of classes above their thresholds
  before the cross-entropy against the other branch's argmax.

Each behaves as DHC's script for it (``code/train_depl.py``, ``code/train_adsh.py``;
docs/protocol.md). Their state (DePL's ``qhat``, Adsh's score bank and thresholds) has the
patch's shape, which the method first learns from the first batch; a checkpoint brings its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from micd.errors import SettingsError
from micd.methods.base import Batch
from micd.methods.cotraining import CPS, CPSSettings
from micd.methods.losses import hard_labels, masked_cross_entropy


class PatchShapedState(nn.Module):
    """Buffers whose shape is only known from the first batch: they start empty, and a state dict
    (a checkpoint, or a saved model) gives each the shape it was saved with before loading it."""

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        for name, buffer in self._buffers.items():
            saved = state_dict.get(prefix + name)
            if buffer is not None and saved is not None and saved.shape != buffer.shape:
                self._buffers[name] = torch.zeros(saved.shape, dtype=buffer.dtype, device=buffer.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


# ----- DePL --------------------------------------------------------------------------------------


@dataclass
class DePLSettings(CPSSettings):
    """DePL (Wang et al., CVPR 2022, "Debiased Learning from Naturally Imbalanced Pseudo-Labels")
    as DHC's ``train_depl.py``; ``beta_max`` 0.1 is the shell scripts' ``-w 0.1`` (the script's own
    default is 1), ``init_a``/``init_b`` Kaiming and Xavier (``train_depl.py:194-195``)."""

    tau: float = 1.0  # train_depl.py:212 (causal_inference's own default 0.5 is never used)
    qhat_momentum: float = 0.99  # train_depl.py:251-252, EMA of the mean unlabelled softmax
    confidence_threshold: float = 0.9  # train_depl.py:246, 248: a voxel teaches if its max debiased prob >= this
    # train_depl.py:254-259 adds tau log(qhat) of the other branch to each branch's unlabelled
    # logits but the loss (line 265) reads the unshifted ones: false is DHC; true applies the shift.
    marginal_shift: bool = False


class ClassPrior(PatchShapedState):
    """DePL's ``qhat``: a running mean of a branch's softmax over the unlabelled patches, kept per
    class and per voxel of the patch, shape (1, C, D, H, W); uniform (1/C) at the start."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.register_buffer("qhat", torch.zeros(0))

    def ensure(self, logits: Tensor) -> Tensor:
        if self.qhat.numel() == 0:
            shape = (1, self.num_classes, *logits.shape[2:])
            self.qhat = torch.ones(shape, device=logits.device) / self.num_classes
        return self.qhat

    def debiased_probabilities(self, logits: Tensor, tau: float) -> Tensor:
        """``softmax(logits - tau log qhat)``: the causal-inference adjustment of the pseudo-labels."""
        return (logits.detach().float() - tau * torch.log(self.ensure(logits))).softmax(dim=1)

    @torch.no_grad()
    def update(self, logits_unlabelled: Tensor, momentum: float) -> None:
        """``qhat <- m qhat + (1 - m) mean_batch softmax(logits)``."""
        qhat = self.ensure(logits_unlabelled)
        if logits_unlabelled.shape[0] == 0:
            return
        mean_probability = logits_unlabelled.detach().float().softmax(dim=1).mean(dim=0)
        self.qhat = momentum * qhat + (1 - momentum) * mean_probability

    def logit_shift(self, tau: float) -> Tensor:
        """``tau log qhat``: the adaptive marginal shift of the logits."""
        return tau * torch.log(self.qhat)


class DePL(CPS):
    training_only_state = ("prior_a.", "prior_b.")
    name = "depl"
    display_name = "DePL"
    Settings = DePLSettings

    def __init__(self, settings: DePLSettings, num_classes: int, network: Callable[..., nn.Module]) -> None:
        super().__init__(settings, num_classes, network)
        self.prior_a = ClassPrior(num_classes)
        self.prior_b = ClassPrior(num_classes)

    def cross_loss(self, batch: Batch, p_a: Tensor, p_b: Tensor, w_a: Tensor, w_b: Tensor) -> Tensor:
        """CE against the other branch's debiased pseudo-labels where they are confident."""
        s, n = self.settings, batch.n_labelled
        # pseudo-labels over the whole batch from the priors as they were before this iteration
        confidence_a, target_a = self.prior_a.debiased_probabilities(p_a, s.tau).max(dim=1)
        confidence_b, target_b = self.prior_b.debiased_probabilities(p_b, s.tau).max(dim=1)
        keep_a = (confidence_a >= s.confidence_threshold).float()
        keep_b = (confidence_b >= s.confidence_threshold).float()
        self.prior_a.update(p_a[n:], s.qhat_momentum)
        self.prior_b.update(p_b[n:], s.qhat_momentum)
        learner_a, learner_b = p_a, p_b
        if s.marginal_shift:  # each branch shifted by the other's updated prior, as DHC's lines 255-259
            learner_a = torch.cat([p_a[:n], p_a[n:] + self.prior_b.logit_shift(s.tau)])
            learner_b = torch.cat([p_b[:n], p_b[n:] + self.prior_a.logit_shift(s.tau)])
        # DHC's WeightedCrossEntropyLoss() without weights
        return masked_cross_entropy(learner_a, target_b, keep_b) + masked_cross_entropy(learner_b, target_a, keep_a)


# ----- Adsh --------------------------------------------------------------------------------------


@dataclass
class AdshSettings(CPSSettings):
    """Adsh (Guo & Li, ICML 2022, "Class-Imbalanced Semi-Supervised Learning with Adaptive
    Thresholding") as DHC's ``train_adsh.py``; ``beta_max`` 0.1 is the script's ``-w`` default and
    the shell scripts' value, ``init_a``/``init_b`` Kaiming and Xavier (``train_adsh.py:242-243``)."""

    majority_threshold: float = 0.9  # train_adsh.py:255-256 thresh_major (the class's default 0.95 is overridden)
    # train_adsh.py:255-256 tot_iter = u_len // 4: the bank holds (unlabelled cases // bank_divisor)
    # softmax maps of unlabelled patches; thresholds are recomputed once it is full
    bank_divisor: int = 4
    bank_slots: int | None = None  # None: unlabelled cases // bank_divisor (Adsh.initialise)


class AdaptiveThresholds(PatchShapedState):
    """Adsh's per-class thresholds, recomputed from a bank of recent unlabelled softmax maps.

    Each call files the unlabelled softmax maps into the bank until fewer than two of its slots
    are left unfilled (DHC's ``cur_iter < tot_iter - 1``); the next call, instead of filing,
    recomputes the thresholds from the whole bank (slots never filled hold zeros and count as
    background votes) and starts filling it again from the first slot. Thresholds start at 0.
    """

    def __init__(self, num_classes: int, majority_threshold: float) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.majority_threshold = majority_threshold
        self.register_buffer("scores", torch.zeros(0))  # (slots, C, D, H, W)
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))  # DHC's cur_iter
        self.register_buffer("thresholds", torch.zeros(num_classes))

    def ensure(self, probabilities: Tensor, slots: int | None) -> None:
        if self.scores.numel() > 0:
            return
        if slots is None:
            raise SettingsError(
                "adsh sizes its score bank from the number of unlabelled cases (DHC: u_len // 4): "
                "set method_settings.adsh.bank_slots, or initialise the method with the unlabelled cases"
            )
        if slots < 1:
            raise SettingsError(f"adsh's score bank needs at least one slot, got {slots} (DHC's would be empty)")
        shape = (slots, self.num_classes, *probabilities.shape[2:])
        self.scores = torch.zeros(shape, device=probabilities.device)

    @torch.no_grad()
    def update(self, probabilities: Tensor, slots: int | None) -> Tensor:
        """File ``probabilities`` (B_u, C, D, H, W) or, with the bank full, recompute the thresholds."""
        self.ensure(probabilities, slots)
        total, filled = self.scores.shape[0], int(self.filled)
        if filled < total - 1:
            fits = probabilities[: total - filled]  # DHC's 2 per batch always fit
            self.scores[filled : filled + fits.shape[0]] = fits
            self.filled += probabilities.shape[0]
        else:
            self.thresholds.copy_(self.from_bank())
            self.filled.zero_()
        return self.thresholds

    def from_bank(self) -> Tensor:
        """``thresholds[c]``: the ``int(rho N_c)``-th highest score of class c over the bank, ``N_c``
        the bank's voxels whose argmax is c, ``rho`` the fraction of the majority class's voxels
        whose score of that class exceeds ``majority_threshold``; float32 as DHC computes them."""
        slots = self.scores.shape[0]
        flat = self.scores.reshape(slots, self.num_classes, -1)
        votes = torch.bincount(flat.argmax(dim=1).reshape(-1), minlength=self.num_classes).float()
        majority = int(votes.argmax())
        confident = (flat[:, majority] > self.majority_threshold).sum().float()
        rho = (confident + 1e-8) / (votes[majority] + 1e-8)
        size = flat.shape[0] * flat.shape[2]
        # descending rank k is the (size - k)-th smallest; DHC would index past the end where
        # rho N_c reaches the bank's size, we take the lowest score there
        ranks = (rho * votes).long().clamp(max=size - 1).tolist()
        return torch.stack([flat[:, c].reshape(-1).kthvalue(size - rank).values for c, rank in enumerate(ranks)])

    def sampling_mask(self, probabilities: Tensor) -> Tensor:
        """(B, C, D, H, W): 1 where a class's probability exceeds its threshold."""
        return (probabilities > self.thresholds.view(1, -1, *([1] * (probabilities.ndim - 2)))).float()


def class_masked_cross_entropy(logits: Tensor, target: Tensor, class_mask: Tensor) -> Tensor:
    """CE of ``logits * class_mask`` (classes masked out get logit 0) against ``target``, averaged
    over all voxels: DHC's ``ClassDependent_WeightedCrossEntropyLoss`` with a weight map."""
    return F.cross_entropy(logits.float() * class_mask, target)


class Adsh(CPS):
    training_only_state = ("thresholds_a.scores", "thresholds_b.scores", "thresholds_a.filled", "thresholds_b.filled")
    name = "adsh"
    display_name = "Adsh"
    Settings = AdshSettings

    def __init__(self, settings: AdshSettings, num_classes: int, network: Callable[..., nn.Module]) -> None:
        super().__init__(settings, num_classes, network)
        if settings.bank_divisor < 1:
            raise SettingsError(f"adsh's bank_divisor must be at least 1, got {settings.bank_divisor}")
        self.bank_slots = settings.bank_slots
        self.thresholds_a = AdaptiveThresholds(num_classes, settings.majority_threshold)
        self.thresholds_b = AdaptiveThresholds(num_classes, settings.majority_threshold)

    def initialise(self, labelled_counts: Tensor, unlabelled_cases: int = 0) -> None:
        """Size the score banks as DHC does, from the number of unlabelled cases (``u_len // 4``),
        unless ``bank_slots`` is set. A bank restored from a checkpoint keeps its saved size."""
        super().initialise(labelled_counts, unlabelled_cases)
        if self.settings.bank_slots is None:
            self.bank_slots = unlabelled_cases // self.settings.bank_divisor

    def cross_loss(self, batch: Batch, p_a: Tensor, p_b: Tensor, w_a: Tensor, w_b: Tensor) -> Tensor:
        """CE against the other branch's argmax of each branch's logits masked to the classes
        above the other branch's thresholds."""
        n = batch.n_labelled
        probabilities_a = p_a.detach().float().softmax(dim=1)
        probabilities_b = p_b.detach().float().softmax(dim=1)
        # thresholds first (from the unlabelled half), then the maps of this iteration with them
        self.thresholds_a.update(probabilities_a[n:], self.bank_slots)
        self.thresholds_b.update(probabilities_b[n:], self.bank_slots)
        mask_a = self.thresholds_a.sampling_mask(probabilities_a)
        mask_b = self.thresholds_b.sampling_mask(probabilities_b)
        return class_masked_cross_entropy(p_a, hard_labels(p_b), mask_b) + class_masked_cross_entropy(
            p_b, hard_labels(p_a), mask_a
        )
