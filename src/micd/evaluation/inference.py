"""Sliding-window inference with TorchIO's grid sampler and aggregator."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
import torchio as tio
from torch import Tensor

from micd.errors import SettingsError


def window_overlap(patch_size: Sequence[int], stride: Sequence[int]) -> tuple[int, int, int]:
    """TorchIO's patch overlap for a window stride; it must be even and smaller than the patch."""
    overlap = tuple(p - s for p, s in zip(patch_size, stride))
    if any(o < 0 or o % 2 or s <= 0 for o, s in zip(overlap, stride)):
        raise SettingsError(
            f"sliding-window stride {tuple(stride)} does not fit patch {tuple(patch_size)}: "
            "each stride must be positive, at most the patch size, and patch - stride even"
        )
    return overlap  # type: ignore[return-value]


@torch.no_grad()
def sliding_window_probabilities(
    predict: Callable[[Tensor], Tensor],
    volume: Tensor,
    patch_size: Sequence[int],
    stride: Sequence[int],
    batch_size: int = 2,
    overlap_mode: str = "average",
    device: torch.device | str = "cpu",
) -> Tensor:
    """Class probabilities (C, D, H, W) of a (D, H, W) volume: softmax of each window, averaged
    where windows overlap. A volume smaller than the patch is zero-padded, and the padding
    cropped from the result."""
    shape = tuple(volume.shape)
    padded = tuple(max(s, p) for s, p in zip(shape, patch_size))
    if padded != shape:
        # F.pad takes (W_before, W_after, H_before, H_after, D_before, D_after)
        volume = F.pad(
            volume,
            [a for s, p in zip(reversed(shape), reversed(padded)) for a in (0, p - s)],
        )
    subject = tio.Subject(image=tio.ScalarImage(tensor=volume[None].float()))
    sampler = tio.GridSampler(subject, patch_size, window_overlap(patch_size, stride))
    aggregator = tio.GridAggregator(sampler, overlap_mode=overlap_mode)
    loader = torch.utils.data.DataLoader(sampler, batch_size=batch_size)
    for windows in loader:
        logits = predict(windows["image"][tio.DATA].to(device))
        aggregator.add_batch(logits.float().softmax(dim=1).cpu(), windows[tio.LOCATION])
    probabilities = aggregator.get_output_tensor()
    return probabilities[:, : shape[0], : shape[1], : shape[2]]


def segment(
    predict: Callable[[Tensor], Tensor],
    volume: Tensor,
    patch_size: Sequence[int],
    stride: Sequence[int],
    batch_size: int = 2,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Hard label map (D, H, W), uint8."""
    probabilities = sliding_window_probabilities(predict, volume, patch_size, stride, batch_size, device=device)
    return probabilities.argmax(0).to(torch.uint8)
