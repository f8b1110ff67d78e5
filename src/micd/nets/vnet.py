"""The VNet backbone of DHC's protocol.

Conv-BN-ReLU stages without residual connections; encoder stages of 1/2/3/3/3 convolutions
(n, 2n, 4n, 8n, 16n channels), stride-2 convolutions down, stride-2 transposed convolutions up,
additive skips, decoder stages of 3/3/2/1 convolutions and a 1x1x1 head. With ``n_filters=32``
it has about 37.8 M parameters.
"""

from __future__ import annotations

import torch  # noqa: F401  (used by the docstring example)
from torch import Tensor, nn

from micd.errors import SettingsError


def _conv_stage(n_convs: int, in_channels: int, out_channels: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(n_convs):
        layers += [
            nn.Conv3d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1),
            nn.BatchNorm3d(out_channels),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers)


def _resample(in_channels: int, out_channels: int, up: bool) -> nn.Sequential:
    conv = nn.ConvTranspose3d if up else nn.Conv3d
    return nn.Sequential(
        conv(in_channels, out_channels, 2, stride=2),
        nn.BatchNorm3d(out_channels),
        nn.ReLU(inplace=True),
    )


class VNet(nn.Module):
    """VNet returning logits and, on request, the four decoder-stage feature maps.

    >>> net = VNet(num_classes=16, n_filters=8)
    >>> logits, features = net(torch.zeros(1, 1, 16, 32, 32), return_features=True)
    >>> logits.shape, [f.shape[1] for f in features]
    (torch.Size([1, 16, 16, 32, 32]), [64, 32, 16, 8])

    Spatial sizes must be divisible by 16 (four stride-2 levels).
    """

    ENCODER_CONVS = (1, 2, 3, 3, 3)
    DECODER_CONVS = (3, 3, 2, 1)

    def __init__(
        self,
        num_classes: int,
        n_filters: int = 32,
        in_channels: int = 1,
        dropout: float = 0.5,
        init: str = "kaiming",
    ) -> None:
        super().__init__()
        widths = [n_filters * 2**i for i in range(5)]  # n .. 16n
        self.encoder = nn.ModuleList()
        self.down = nn.ModuleList()
        for level, n_convs in enumerate(self.ENCODER_CONVS):
            stage_in = in_channels if level == 0 else widths[level]
            self.encoder.append(_conv_stage(n_convs, stage_in, widths[level]))
            if level < 4:
                self.down.append(_resample(widths[level], widths[level + 1], up=False))
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for step, n_convs in enumerate(self.DECODER_CONVS):
            level = 3 - step
            self.up.append(_resample(widths[level + 1], widths[level], up=True))
            self.decoder.append(_conv_stage(n_convs, widths[level], widths[level]))
        self.dropout = nn.Dropout3d(dropout)
        self.head = nn.Conv3d(n_filters, num_classes, 1)
        initialise(self, init)

    def encode(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        """The four skip maps (fine to coarse) and the bottleneck after its dropout."""
        skips = []
        for level, stage in enumerate(self.encoder):
            x = stage(x)
            if level < 4:
                skips.append(x)
                x = self.down[level](x)
        return skips, self.dropout(x)

    def decode(
        self, skips: list[Tensor], bottleneck: Tensor, path: nn.Module | None = None
    ) -> tuple[Tensor, list[Tensor]]:
        """The last decoder map after its dropout (what the head reads) and the four decoder-stage
        maps, through ``path``'s ``up`` and ``decoder`` stages (default: this network's own)."""
        path = self if path is None else path
        x, features = bottleneck, []
        for up, stage, skip in zip(path.up, path.decoder, reversed(skips)):
            x = stage(up(x) + skip)
            features.append(x)
        return self.dropout(x), features

    def forward(self, x: Tensor, return_features: bool = False) -> Tensor | tuple[Tensor, list[Tensor]]:
        last, features = self.decode(*self.encode(x))
        logits = self.head(last)
        return (logits, features) if return_features else logits


INITIALISATIONS = ("kaiming", "xavier", "default")


def initialise(net: nn.Module, init: str) -> nn.Module:
    """Re-initialise the weights of every ``Conv3d`` as DHC's ``kaiming_normal_init_weight`` or
    ``xavier_normal_init_weight`` do (BatchNorm to 1 and 0); everything else, the biases and the
    transposed convolutions included, keeps PyTorch's default initialisation. ``default``
    changes nothing (DHC's fully supervised and UA-MT scripts)."""
    if init not in INITIALISATIONS:
        raise SettingsError(f"unknown initialisation {init!r}; expected one of {list(INITIALISATIONS)}")
    if init == "default":
        return net
    conv_init = nn.init.kaiming_normal_ if init == "kaiming" else nn.init.xavier_normal_
    for module in net.modules():
        if isinstance(module, nn.Conv3d):  # not ConvTranspose3d, which is no Conv3d
            conv_init(module.weight)
        elif isinstance(module, nn.BatchNorm3d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    return net


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
