"""The VNet of STAC's row (STAC's ``VNetDist``, ``code/models/vnet.py``): the VNet with a second
1x1x1 head on the last decoder map that regresses a signed distance (one channel, before tanh)."""

from __future__ import annotations

from torch import Tensor, nn

from micd.nets.vnet import VNet, initialise


class DistanceVNet(VNet):
    """The forward pass is the VNet's (logits only, as ``VNetDist`` in eval mode);
    :meth:`with_distance` gives the logits and the distance head's output for training."""

    def __init__(
        self, num_classes: int, n_filters: int = 32, in_channels: int = 1, dropout: float = 0.5, init: str = "kaiming"
    ):
        super().__init__(num_classes, n_filters, in_channels, dropout, init)
        self.distance_head = initialise(nn.Conv3d(n_filters, 1, 1), init)

    def with_distance(self, x: Tensor) -> tuple[Tensor, Tensor]:
        last, _ = self.decode(*self.encode(x))
        return self.head(last), self.distance_head(last)
