"""The VNet of DST's row (DHC's ``VNet_Decoupled``, ``code/models/vnet_dst.py:154-337``).

One VNet encoder feeding three decoders of the VNet's shape (up-sampling and decoder stages and
a 1x1x1 head each): the main one, whose logits are the prediction; a pseudo one, whose argmax
and confidence are the pseudo-labels the *other* network learns from; and a worst-case one
that reads every encoder output (the four skips and the bottleneck) through a gradient
reversal layer. The main path is the VNet's own (same modules, same state-dict keys), so the
forward pass is the VNet's: the main logits, in any mode, as DHC's eval-mode forward returns;
:meth:`DecoupledVNet.branches` gives all three for training.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import Tensor, nn

from micd.nets.vnet import VNet, initialise


class _ReverseGradient(torch.autograd.Function):
    """Identity forward; the gradient multiplied by ``-coefficient`` backward."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, coefficient: float) -> Tensor:
        ctx.coefficient = coefficient
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return -ctx.coefficient * grad, None


def reverse_gradient(x: Tensor, coefficient: float) -> Tensor:
    return _ReverseGradient.apply(x, coefficient)


def warm_start_coefficient(step: int, low: float, high: float, alpha: float, max_steps: float) -> float:
    """The reversal layer's coefficient after ``step`` steps: ``2 (hi - lo) / (1 + exp(-alpha step / N))
    - (hi - lo) + lo``, from ``lo`` at step 0 towards ``hi`` (DHC's ``WarmStartGradientReverseLayer``)."""
    span = high - low
    return 2.0 * span / (1.0 + math.exp(-alpha * step / max_steps)) - span + low


class DecoderPath(nn.Module):
    """The decoding half of a VNet: up-sampling stages, decoder stages and the 1x1x1 head."""

    def __init__(self, up: nn.ModuleList, decoder: nn.ModuleList, head: nn.Module) -> None:
        super().__init__()
        self.up, self.decoder, self.head = up, decoder, head

    @classmethod
    def fresh_copy_of(cls, net: VNet) -> "DecoderPath":
        """New modules shaped as ``net``'s decoding half, at PyTorch's initialisation."""
        path = cls(copy.deepcopy(net.up), copy.deepcopy(net.decoder), copy.deepcopy(net.head))
        for module in path.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        return path


class DecoupledVNet(VNet):
    """The VNet with a pseudo-label decoder and a worst-case decoder beside its own.

    ``init`` (DHC's Kaiming or Xavier re-initialisation) covers the extra decoders too, as
    DHC's helpers walk the whole ``VNet_Decoupled``.
    """

    def __init__(
        self,
        num_classes: int,
        n_filters: int = 32,
        in_channels: int = 1,
        dropout: float = 0.5,
        init: str = "kaiming",
    ) -> None:
        super().__init__(num_classes, n_filters, in_channels, dropout, init)
        self.pseudo = DecoderPath.fresh_copy_of(self)
        self.worst = DecoderPath.fresh_copy_of(self)
        initialise(self.pseudo, init)
        initialise(self.worst, init)

    def branches(self, x: Tensor, reversal: float) -> tuple[Tensor, Tensor, Tensor]:
        """Main, pseudo and worst-case logits from one encoder pass; the worst-case decoder's
        gradient reaches the encoder multiplied by ``-reversal``."""
        skips, bottleneck = self.encode(x)
        main = self.head(self.decode(skips, bottleneck)[0])
        pseudo = self.pseudo.head(self.decode(skips, bottleneck, self.pseudo)[0])
        reversed_skips = [reverse_gradient(skip, reversal) for skip in skips]
        worst_map = self.decode(reversed_skips, reverse_gradient(bottleneck, reversal), self.worst)[0]
        return main, pseudo, self.worst.head(worst_map)
