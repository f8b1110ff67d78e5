"""URPC's backbone: DHC's ``unet_3D_ds`` (``code/models/unet_ds.py``), a 3-D UNet whose four
decoder stages each end in a segmentation head.

- Encoder: five stages of two 3x3x3 convolutions, each followed by ``InstanceNorm3d`` (no affine
  parameters, no running statistics: DHC's ``is_batchnorm=True`` selects instance norm) and
  ReLU, with 2x2x2 max-pooling between stages; widths w, 2w, 4w, 8w, 16w. DHC divides
  (64, ..., 1024) by ``feature_scale=4``: w = 16.
- Decoder: the deeper map upsampled x2 (trilinear, ``align_corners=False``), concatenated after
  the skip, then the same two-convolution stage; ``Dropout3d`` of 0.5, 0.3, 0.2, 0.1 after the
  four decoder stages, deepest first.
- Heads: a 1x1x1 convolution on each dropped-out decoder map; the three coarser heads' logits
  are upsampled trilinearly x8, x4, x2 to the input size.
- Initialisation: Kaiming normal (fan-in) on every convolution weight, biases at PyTorch's
  default, as the model file itself does.

``forward(x)`` returns the full-resolution head's logits, the output DHC's model gives in eval
mode (validation and ``test.py``); ``return_auxiliary=True`` adds the three coarser heads.
With w = 16 and 16 classes it has 5,887,920 parameters, as DHC's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from micd.nets.vnet import initialise

DHC_WIDTH = 16  # unet_ds.py: filters (64, 128, 256, 512, 1024) / feature_scale 4
DHC_DROPOUT = (0.5, 0.3, 0.2, 0.1)  # after the decoder stages, deepest first
LEVELS = 5  # four poolings: spatial sizes must be multiples of 16


def _double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for channels in (in_channels, out_channels):
        layers += [nn.Conv3d(channels, out_channels, 3, padding=1), nn.InstanceNorm3d(out_channels), nn.ReLU(True)]
    return nn.Sequential(*layers)


def _upsample(x: Tensor, factor: int) -> Tensor:
    return F.interpolate(x, scale_factor=factor, mode="trilinear", align_corners=False)


class UNetDS(nn.Module):
    """3-D UNet with deep supervision.

    >>> net = UNetDS(num_classes=4, width=2)
    >>> logits, auxiliary = net(torch.zeros(1, 1, 32, 32, 32), return_auxiliary=True)
    >>> logits.shape, [a.shape[1:] for a in auxiliary]
    (torch.Size([1, 4, 32, 32, 32]), [torch.Size([4, 32, 32, 32]), torch.Size([4, 32, 32, 32]), torch.Size([4, 32, 32, 32])])
    """

    def __init__(
        self,
        num_classes: int,
        width: int = DHC_WIDTH,
        in_channels: int = 1,
        dropout: tuple[float, ...] | list[float] = DHC_DROPOUT,
        init: str = "kaiming",
    ) -> None:
        super().__init__()
        if len(dropout) != LEVELS - 1:
            raise ValueError(f"dropout needs one probability per decoder stage ({LEVELS - 1}), got {list(dropout)}")
        widths = [width * 2**level for level in range(LEVELS)]
        self.encoder = nn.ModuleList(
            _double_conv(in_channels if level == 0 else widths[level - 1], widths[level]) for level in range(LEVELS)
        )
        self.pool = nn.MaxPool3d(2)
        # deepest first: stage k takes level 4 - k up to level 3 - k
        self.decoder = nn.ModuleList(
            _double_conv(widths[level + 1] + widths[level], widths[level]) for level in reversed(range(LEVELS - 1))
        )
        self.dropout = nn.ModuleList(nn.Dropout3d(p) for p in dropout)
        # head k reads decoder level k (0: full resolution) and is upsampled by 2**k
        self.heads = nn.ModuleList(nn.Conv3d(widths[level], num_classes, 1) for level in range(LEVELS - 1))
        initialise(self, init)  # no BatchNorm here: only the convolution weights change

    def forward(self, x: Tensor, return_auxiliary: bool = False) -> Tensor | tuple[Tensor, list[Tensor]]:
        """Logits at the input's size; with ``return_auxiliary`` also the heads of decoder levels
        1, 2, 3 (1/2, 1/4, 1/8 of the input's size, upsampled back), in that order."""
        factor = 2 ** (LEVELS - 1)
        if any(size % factor for size in x.shape[2:]):
            raise ValueError(f"UNetDS needs spatial sizes divisible by {factor}, got {tuple(x.shape[2:])}")
        skips = []
        for level, stage in enumerate(self.encoder):
            x = stage(self.pool(x) if level else x)
            skips.append(x)
        x = skips.pop()  # the bottleneck
        decoded = []  # decoder maps, deepest (level 3) first
        for stage, dropout, skip in zip(self.decoder, self.dropout, reversed(skips)):
            x = dropout(stage(torch.cat([skip, _upsample(x, 2)], dim=1)))
            decoded.append(x)
        by_level = decoded[::-1]  # level 0 (full resolution) first
        logits = self.heads[0](by_level[0])
        if not return_auxiliary:
            return logits
        auxiliary = [_upsample(self.heads[level](by_level[level]), 2**level) for level in range(1, LEVELS - 1)]
        return logits, auxiliary
