"""The method interface: what a method declares and what the training engine does for it.

A method owns its networks (students it trains, and any teachers) and its class-weighting
state; it turns a batch into a :class:`StepResult`: named loss terms, and apart from them the
diagnostics worth logging that are not losses. The engine does everything else: data,
optimisers (one per student), learning-rate schedule, mixed precision, EMA calls,
checkpoints, validation and logging.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from micd.errors import SettingsError
from micd.names import nearest
from micd.nets.derived import derived_network
from micd.setting_types import type_problems


@dataclass
class Batch:
    """``image`` holds the labelled patches first, then the unlabelled ones."""

    image: Tensor  # (b_l + b_u, 1, D, H, W)
    label: Tensor  # (b_l, D, H, W), int64

    @property
    def n_labelled(self) -> int:
        return self.label.shape[0]


@dataclass
class StepResult:
    """What one training step computed. ``losses``: ``loss``, the total the engine back-propagates,
    and its named terms, detached (the training-curves figure draws these); ``diagnostics``:
    values logged beside them that are not losses (a weight, a fraction of confident voxels)."""

    losses: dict[str, Tensor]
    diagnostics: dict[str, Tensor] = field(default_factory=dict)

    @property
    def loss(self) -> Tensor:
        return self.losses["loss"]


@dataclass
class Progress:
    epoch: int  # epoch of this iteration, 0 .. max_epochs (DHC's loop runs max_epochs + 1 of them)
    max_epochs: int
    iteration: int  # 0-based global iteration
    iterations_per_epoch: int | None = None  # the engine's epoch length (None: not known)

    @property
    def schedule_epoch(self) -> int:
        """The epoch whose value the per-epoch schedules (learning rate, consistency weight) hold
        now: DHC updates them at the end of each epoch, so epoch e trains with the value of e - 1."""
        return max(self.epoch - 1, 0)


def gaussian_rampup(epoch: float, rampup_epochs: float, beta_max: float) -> float:
    """``beta_max * exp(-5 (1 - min(t, T)/T)^2)``: the consistency weight's ramp-up."""
    if rampup_epochs <= 0:
        return beta_max
    phase = 1.0 - min(epoch, rampup_epochs) / rampup_epochs
    return beta_max * math.exp(-5.0 * phase * phase)


def scheduled_rampup(progress: Progress, rampup_epochs: float | None, maximum: float) -> float:
    """The Gaussian ramp-up of the consistency weight at this iteration's schedule epoch;
    ``rampup_epochs=None`` ramps over the whole schedule."""
    length = progress.max_epochs if rampup_epochs is None else rampup_epochs
    return gaussian_rampup(progress.schedule_epoch, length, maximum)


class Method(nn.Module):
    """Base class of every training method. Subclasses set ``name`` and ``Settings``."""

    name: ClassVar[str]
    display_name: ClassVar[str]  # the paper's name, as DHC's published tables spell it
    Settings: ClassVar[type]
    uses_unlabelled: ClassVar[bool] = True
    # state keys (prefixes) needed only to go on training, e.g. banks of past predictions:
    # checkpoints carry them, model.pt does not
    training_only_state: ClassVar[tuple[str, ...]] = ()
    # "labelled": the ratio's labelled list; "train": every training case (upper bound)
    labelled_set: ClassVar[str] = "labelled"

    def __init__(self, settings: Any, num_classes: int, network: Callable[..., nn.Module]) -> None:
        super().__init__()
        self.settings = settings
        self.num_classes = num_classes
        self._network = network

    def new_network(self, init: str = "kaiming", network_class: type[nn.Module] | None = None) -> nn.Module:
        """A freshly initialised backbone (the protocol's VNet) with ``num_classes`` outputs, or a
        ``network_class`` built with the same classes, width and dropout (a VNet with extra heads).

        ``init``: ``kaiming`` or ``xavier`` (DHC's re-initialisation of the convolutions) or
        ``default`` (PyTorch's own), see :func:`micd.nets.vnet.initialise`.
        """
        if network_class is None:
            return self._network(init=init)
        return derived_network(self._network, network_class, init=init)

    def students(self) -> dict[str, nn.Module]:
        """The trained networks; the engine gives each its own optimiser."""
        raise NotImplementedError

    def initialise(self, labelled_counts: Tensor, unlabelled_cases: int = 0) -> None:
        """Called once before training with the voxel count per class of the labelled set and
        the number of unlabelled cases."""

    def patch_label_probabilities(self) -> dict[int, float] | None:
        """Sampling weight per class for the centres of labelled patches; None: the engine's choice."""
        return None

    def training_step(self, batch: Batch, progress: Progress) -> StepResult:
        """The loss terms and diagnostics of one iteration (see :class:`StepResult`)."""
        raise NotImplementedError

    def consistency_weight(self, progress: Progress) -> float:
        """The weight of the unsupervised terms now: DHC's Gaussian ramp-up to ``settings.beta_max``
        over ``settings.rampup_epochs`` (None: the whole run), for methods whose settings have them."""
        s = self.settings
        return scheduled_rampup(progress, s.rampup_epochs, s.beta_max)

    @staticmethod
    def loss_terms(sup: Tensor, beta: float, **unsupervised: Tensor) -> StepResult:
        """``loss = sup + beta * sum(unsupervised)``, with every term detached for the log, and the
        consistency weight ``beta`` as a diagnostic."""
        total = sup + beta * sum(unsupervised.values(), torch.zeros((), device=sup.device))
        logged = {name: term.detach() for name, term in unsupervised.items()}
        return StepResult({"loss": total, "sup": sup.detach(), **logged}, {"beta": torch.tensor(beta)})

    def after_step(self, progress: Progress) -> None:
        """Called after the optimisers stepped (EMA teachers update here)."""

    def predict(self, x: Tensor) -> Tensor:
        """Logits for inference."""
        raise NotImplementedError

    def train(self, mode: bool = True) -> "Method":
        super().train(mode)
        for teacher in self.teachers():
            teacher.eval()
        return self

    def teachers(self) -> list[nn.Module]:
        return []

    def inference_state_dict(self) -> dict[str, Tensor]:
        """The state a trained model needs for inference: all of it but ``training_only_state``."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith(self.training_only_state)}

    def load_inference_state_dict(self, state: dict[str, Tensor]) -> None:
        """Load what :meth:`inference_state_dict` saved; anything else missing is an error."""
        missing, unexpected = self.load_state_dict(state, strict=False)
        lost = [k for k in missing if not k.startswith(self.training_only_state)]
        if lost or unexpected:
            raise RuntimeError(f"{self.name}: saved model state lacks {lost} and has unknown {unexpected}")


def unknown_setting(method: str, key: str, known: Iterable[str]) -> str:
    """What to tell a user who gave ``method`` a setting it does not have: the nearest of its
    settings, if one is close, and all of them."""
    known = sorted(known)
    close = nearest(key, known)
    hint = f"; did you mean {close!r}?" if close else ""
    return f"{method} has no setting {key!r}{hint} ({method}'s settings: {', '.join(known)})"


def settings_from_dict(settings_cls: type, values: dict[str, Any] | None, method: str) -> Any:
    """Build a method's settings dataclass, refusing keys it does not know."""
    values = dict(values or {})
    known = {f.name for f in dataclasses.fields(settings_cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise SettingsError("; ".join(unknown_setting(method, key, known) for key in unknown))
    wrong = type_problems(settings_cls, values)
    if wrong:
        raise SettingsError("; ".join(f"{method} setting {key!r}: {problem}" for key, problem in wrong.items()))
    return settings_cls(**values)
