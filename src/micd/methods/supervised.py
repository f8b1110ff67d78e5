"""The VNet trained on labelled cases only: the lower bound, and with every training case
labelled, the upper bound ("V-Net (fully)")."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor, nn

from micd.methods.base import Batch, Method, Progress, StepResult
from micd.methods.losses import dice_ce


@dataclass
class SupervisedSettings:
    init: str = "default"  # DHC's train_fully.py leaves PyTorch's initialisation


class Supervised(Method):
    name = "supervised"
    display_name = "V-Net (labelled only)"
    Settings = SupervisedSettings
    uses_unlabelled = False

    def __init__(self, settings: SupervisedSettings, num_classes: int, network: Callable[..., nn.Module]) -> None:
        super().__init__(settings, num_classes, network)
        self.net = self.new_network(settings.init)

    def students(self) -> dict[str, nn.Module]:
        return {"net": self.net}

    def training_step(self, batch: Batch, progress: Progress) -> StepResult:
        logits = self.net(batch.image[: batch.n_labelled])
        loss = dice_ce(logits, batch.label)
        return StepResult({"loss": loss, "sup": loss.detach()})

    def predict(self, x: Tensor) -> Tensor:
        return self.net(x)


class Fully(Supervised):
    """Upper bound: the same network with every training case labelled."""

    name = "fully"
    display_name = "V-Net (fully)"
    labelled_set = "train"
