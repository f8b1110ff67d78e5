"""Basak et al. (MICCAI 2022, "Addressing class imbalance in semi-supervised image segmentation:
a study on cardiac MRI"), as DHC's ``code/train_acisis.py`` trains it (docs/protocol.md).

A VNet student and its EMA teacher. The student is supervised on the labelled half (CE + Dice)
and learns, on the unlabelled half, the teacher's argmax, each voxel's cross-entropy weighted by
``keep * p_max^1.5``: ``p_max`` the student's top softmax probability, ``keep`` a Bernoulli draw
with the sampling rate of the class the student predicts there. The rates handle the class
imbalance: three per-class indicators of how the student fits the labelled voxels (an
entropy-like score, the mean true-class probability, its gap to the top probability) are
pooled over an epoch, fused by a Gompertz fuzzy rank into a per-class score, whose EMA gives
the rates ``((1 - score) / max(1 - score))^2.5``: classes the student fits badly are sampled
more. Every choice below is DHC's script's, its quirks included (see ``ClassIndicators``).
Inference is on the student: DHC saves and tests it (``train_acisis.py:498``, ``test.py:75-84``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from micd.errors import SettingsError
from micd.methods.base import Batch, Progress, StepResult
from micd.methods.losses import at_least_single, dice_ce, hard_labels, masked_cross_entropy
from micd.methods.teachers import StudentWithTeacher

LOG_EPS = 1e-12  # train_acisis.py:180: log(scores + 1e-12)
COUNT_EPS = 1e-12  # train_acisis.py:179: voxels of the class + 1e-12
RATE_EPS = 1e-12  # train_acisis.py:279: rate / (max + 1e-12)
GOMPERTZ_SLOPE = 2.0  # train_acisis.py:208: 1 - exp(-exp(-2 x))


@dataclass
class ACISISSettings:
    beta_max: float = 0.1  # -w 0.1 (README.md:68, train3times_seeds_*.sh:27); train_acisis.py:22 default 1
    rampup_epochs: float | None = None  # -r, -cr unset: over max_epoch (train_acisis.py:23-24, 79-86, 460)
    init: str = "kaiming"  # train_acisis.py:361-362: Kaiming on the student and, drawn apart, the teacher
    ema_decay: float = 0.99  # train_acisis.py:438
    ema_step: str = "epoch"  # train_acisis.py:438 passes epoch_num as the EMA's step
    teacher_mode: str = "train"  # train_acisis.py:387: the EMA model is only ever put in training mode
    indicator_momentum: float = 0.99  # train_acisis.py:363 (the class's own default, 0.999, is overridden)
    # iterations pooled per rate update; None: one epoch (train_acisis.py:363 update_iter=len(unlabeled_loader))
    update_every: int | None = None
    top_classes: int = 12  # train_acisis.py:166 top_m: classes that keep their fuzzy rank per indicator
    rank_penalty: float = 0.632  # train_acisis.py:168 P_FR: the rank of a class outside the top
    score_penalty: float = 0.0  # train_acisis.py:167 P_CCF: its indicator value in the fused score
    rate_power: float = 2.5  # train_acisis.py:169 lambda_
    confidence_power: float = 1.5  # train_acisis.py:170 beta: the voxel weight p_max^beta
    min_rate: float = 0.0  # train_acisis.py:287 min_sr (never passed): floor of the foreground rates
    # train_acisis.py:180-184 compare (B, 1, D, H, W) labels (utils/__init__.py:113) with (B, D, H, W) scores, which
    # broadcasts to every (labelled case, predicted case) pair; False pairs each case with itself
    all_pairs: bool = True


class ClassIndicators(nn.Module):
    """The per-class sampling rates and the statistics behind them (DHC's ``ConfidenceArray``).

    Each recorded iteration adds, per class k, ``sum(mask * q) / (N_k + 1e-12)`` to three
    indicators, ``N_k`` the labelled voxels of class k, ``mask`` the voxels labelled k, and ``q``
    from the student's softmax ``p`` on the labelled cases:

    - entropy: ``p_k * sum_c log(p_c + 1e-12)`` (DHC's formula: the sum runs over the log
      probabilities of every class, it is no entropy);
    - confidence: ``p_k``;
    - variance: ``max_c p_c - p_k``.

    As DHC's labels keep their channel axis, ``sum(mask * q)`` runs over every pair of a
    labelled case's mask and a case's ``q`` (``all_pairs``), not only over matching cases.

    :meth:`refresh` turns the pooled indicators (divided by the iterations recorded) into a
    softmax over classes per indicator ``r``, a Gompertz rank ``g = 1 - exp(-exp(-2 r))`` kept for
    the ``top`` classes of smallest ``g`` (ties included) and ``rank_penalty`` for the others;
    the fused score is ``sum(ranks) * (1 - sum(r') / 3)``, ``r'`` being ``r`` with
    ``score_penalty`` where the rank is the penalty, divided by its maximum; ``score`` is its EMA
    (from 0) and the rates ``((1 - score) / (max(1 - score) + 1e-12))^power``. Until the first
    refresh every rate is 1.
    """

    INDICATORS = ("entropy", "confidence", "variance")

    def __init__(
        self,
        num_classes: int,
        momentum: float,
        top: int,
        rank_penalty: float,
        score_penalty: float,
        power: float,
        all_pairs: bool,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.momentum, self.top, self.power, self.all_pairs = momentum, top, power, all_pairs
        self.rank_penalty, self.score_penalty = rank_penalty, score_penalty
        self.register_buffer("indicators", torch.zeros(len(self.INDICATORS), num_classes))
        self.register_buffer("recorded", torch.zeros((), dtype=torch.long))
        self.register_buffer("score", torch.zeros(num_classes))
        self.register_buffer("rates", torch.ones(num_classes))

    @torch.no_grad()
    def record(self, logits: Tensor, labels: Tensor) -> None:
        """Add one iteration's indicators from the student's logits (B, C, ...) on the labelled cases."""
        probs = logits.detach().to(self.indicators.dtype).softmax(1).flatten(2)  # (B, C, V)
        labels = labels.reshape(labels.shape[0], -1)  # (B, V)
        log_sum = torch.log(probs + LOG_EPS).sum(1)  # (B, V)
        top = probs.amax(1)
        sums = torch.zeros_like(self.indicators)
        for labelled, target in enumerate(labels):
            for case in range(len(probs)) if self.all_pairs else (labelled,):
                p_true = probs[case].gather(0, target.unsqueeze(0)).squeeze(0)  # p_k where labelled k
                for row, values in enumerate((p_true * log_sum[case], p_true, top[case] - p_true)):
                    sums[row].index_add_(0, target, values)
        counts = torch.bincount(labels.reshape(-1), minlength=self.num_classes).to(sums.dtype)
        self.indicators += sums / (counts + COUNT_EPS)
        self.recorded += 1

    @torch.no_grad()
    def refresh(self) -> None:
        """Fold the pooled indicators into the score and the rates; start pooling afresh."""
        normalised = (self.indicators / self.recorded).softmax(1).double()  # (3, C)
        gompertz = 1 - torch.exp(-torch.exp(-GOMPERTZ_SLOPE * normalised))
        top = min(self.top, self.num_classes)  # DHC's np.partition fails for fewer classes than top
        cutoff = gompertz.sort(1).values[:, top - 1 : top]
        ranks = torch.where(gompertz <= cutoff, gompertz, torch.full_like(gompertz, self.rank_penalty))
        penalised = ranks == self.rank_penalty  # DHC tests the value, not the membership
        kept = torch.where(penalised, torch.full_like(normalised, self.score_penalty), normalised)
        fused = ranks.sum(0) * (1 - kept.sum(0) / len(self.INDICATORS))
        fused = (fused / fused.max()).to(self.score.dtype)
        self.score.mul_(self.momentum).add_((1 - self.momentum) * fused)
        unsure = 1 - self.score
        self.rates.copy_((unsure / (unsure.max() + RATE_EPS)) ** self.power)
        self.indicators.zero_()
        self.recorded.zero_()


def sampling_weights(
    logits: Tensor, rates: Tensor, power: float, min_rate: float = 0.0, uniform: Tensor | None = None
) -> Tensor:
    """Per-voxel weights (B, D, H, W) of the unlabelled cross-entropy: ``keep * p_max^power``.

    ``keep`` is 1 with the rate of the voxel's predicted class (argmax of ``logits``), foreground
    rates floored at ``min_rate``; ``uniform`` (U[0, 1) per voxel) may be given to fix the draw.
    """
    logits = logits.detach()
    predicted = hard_labels(logits)
    top = at_least_single(logits).softmax(1).amax(1)
    floor = torch.full_like(rates, min_rate)
    floor[0] = 0.0
    rate = torch.maximum(rates, floor)[predicted]
    if uniform is None:
        uniform = torch.rand(predicted.shape, device=logits.device)
    return (uniform > 1 - rate).to(top.dtype) * top**power


class ACISIS(StudentWithTeacher):
    # DHC builds and initialises its EMA model on its own; its first EMA step (decay 0 in
    # epoch 0) then copies the student, so only the first iteration's targets come from it
    independent_teacher = True
    name = "acisis"
    display_name = "Basak et al."
    Settings = ACISISSettings

    def __init__(self, settings: ACISISSettings, num_classes: int, network: Callable[..., nn.Module]) -> None:
        if settings.top_classes < 1:
            raise SettingsError(f"acisis top_classes must be at least 1, got {settings.top_classes}")
        if settings.update_every is not None and settings.update_every < 1:
            raise SettingsError(f"acisis update_every must be None or at least 1, got {settings.update_every}")
        super().__init__(settings, num_classes, network)
        self.indicators = ClassIndicators(
            num_classes,
            settings.indicator_momentum,
            settings.top_classes,
            settings.rank_penalty,
            settings.score_penalty,
            settings.rate_power,
            settings.all_pairs,
        )
        self.register_buffer("recorded_epoch", torch.tensor(-1))  # the epoch of the last record

    def update_rates(self, logits_labelled: Tensor, labels: Tensor, progress: Progress) -> Tensor:
        """Record this iteration and refresh the rates when a pooling period is complete.

        DHC refreshes right after recording the last iteration of each epoch, whose mask then
        already uses the new rates. With a period (``update_every``, or the epoch's length where
        ``progress`` carries ``iterations_per_epoch``) we do the same; otherwise the epoch's end
        is seen at the next epoch's first iteration, which refreshes from the same pooled epoch
        before recording, so only the last iteration of each epoch samples with the older rates.
        """
        period = self.settings.update_every or progress.iterations_per_epoch
        bank = self.indicators
        if period is None and progress.epoch != int(self.recorded_epoch) and int(bank.recorded) > 0:
            bank.refresh()
        bank.record(logits_labelled, labels)
        self.recorded_epoch.fill_(progress.epoch)
        if period is not None and int(bank.recorded) >= period:
            bank.refresh()
        return bank.rates

    def training_step(self, batch: Batch, progress: Progress) -> StepResult:
        s = self.settings
        n = batch.n_labelled
        logits = self.student(batch.image)
        with torch.no_grad():
            pseudo_labels = hard_labels(self.teacher(batch.image[n:]))
        sup = dice_ce(logits[:n], batch.label)
        rates = self.update_rates(logits[:n], batch.label, progress)
        weights = sampling_weights(logits[n:], rates, s.confidence_power, s.min_rate)
        # DHC's WeightedCrossEntropyLoss with a weight map
        pseudo = masked_cross_entropy(logits[n:], pseudo_labels, weights)
        return self.loss_terms(sup, self.consistency_weight(progress), pseudo=pseudo)
