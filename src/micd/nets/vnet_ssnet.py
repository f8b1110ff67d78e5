"""The VNet of SS-Net's row (DHC's ``VNet4SSNet``, ``code/models/vnet.py:181-314``).

Our VNet plus the parts SS-Net's prototype separation needs, all on the last decoder map
(``n`` channels): a projection head ``n -> 2n -> 2n`` and a prediction head ``2n -> 2n -> 2n``
(Linear, BatchNorm1d, ReLU, Linear), and per class two selectors ``2n -> 2n -> 1`` (Linear,
BatchNorm1d, LeakyReLU 0.2, Linear) that score feature vectors and memory entries. The
forward pass is the VNet's and returns logits in any mode (DHC's returns the embedding too in
training mode); :meth:`SSNetVNet.logits_and_embedding` gives both.
"""

from __future__ import annotations

from torch import Tensor, nn

from micd.nets.vnet import VNet


def _mlp(in_features: int, hidden: int, out_features: int, activation: nn.Module) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_features, hidden),
        nn.BatchNorm1d(hidden),
        activation,
        nn.Linear(hidden, out_features),
    )


def _selector(width: int) -> nn.Sequential:
    return _mlp(width, width, 1, nn.LeakyReLU(0.2, inplace=True))


class SSNetVNet(VNet):
    """A VNet with SS-Net's heads; ``init`` defaults to PyTorch's, as ``train_ssnet.py:331-332``
    leave DHC's re-initialisation commented out."""

    def __init__(
        self,
        num_classes: int,
        n_filters: int = 32,
        in_channels: int = 1,
        dropout: float = 0.5,
        init: str = "default",
    ) -> None:
        # the heads hold no Conv3d or BatchNorm3d, so the VNet's initialisation covers all there is to set
        super().__init__(num_classes, n_filters, in_channels, dropout, init)
        width = 2 * n_filters
        self.embedding_channels = n_filters
        self.projection_head = _mlp(n_filters, width, width, nn.ReLU(inplace=True))
        self.prediction_head = _mlp(width, width, width, nn.ReLU(inplace=True))
        self.feature_selectors = nn.ModuleList(_selector(width) for _ in range(num_classes))
        self.memory_selectors = nn.ModuleList(_selector(width) for _ in range(num_classes))

    def logits_and_embedding(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Logits and the map the 1x1x1 head reads: the last decoder stage after its dropout
        (DHC's ``x9``), (B, n_filters, D, H, W); one forward pass, so both share the dropout mask."""
        embedding, _ = self.decode(*self.encode(x))
        return self.head(embedding), embedding
