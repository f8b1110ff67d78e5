"""GA's and STAC's formulas, written out for the tests that compare our rows against them:
GA's ``GALoss.py`` (github.com/cicailalala/GALoss) and STAC's ``code/data/data_loaders.py`` and
``code/train_dhc_stac.py`` (github.com/GuGuLL123/STAC), each restated step by step as those files
compute it, on (B, C, D, H, W) tensors and (D, H, W) arrays."""

from __future__ import annotations

import random

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import distance_transform_edt, gaussian_filter, map_coordinates


def ga_ce(logits: torch.Tensor, target: torch.Tensor, k: float, gamma: float) -> torch.Tensor:
    """``GACE(k, gama)``: per-voxel CE, the top ``int(N k / 100)`` kept, class by class
    ``sum(loss of the class's kept voxels) / ((n_c + 1e-10)^(1 - gamma) K^gamma + 1e-10)``, summed."""
    num_classes = logits.shape[1]
    flat_logits = logits.movedim(1, -1).reshape(-1, num_classes)
    res = F.cross_entropy(flat_logits, target.reshape(-1), reduction="none")
    n_instance = res.numel()
    kept = int(n_instance * k / 100)
    res, indices = torch.topk(res, kept, sorted=False)
    target = torch.gather(target.reshape(-1), 0, indices)
    bg_w = np.power(kept, gamma)
    loss = 0.0
    for i in range(num_classes):
        target_cls = (target == i).float()
        w = torch.pow(torch.sum(target_cls) + 1e-10, 1 - gamma) * bg_w
        loss = loss + torch.sum(res * target_cls) / (w + 1e-10)
    return loss


def ga_dice(probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``GADice()(softmax, labels)``: per class, over the batch, ``1 - (2 sum p y + s)/(sum p^2 +
    sum y^2 + s)`` where the class occurs, ``sum(p.detach() / sum(1 - y) * p)`` where it does not;
    the mean over all classes, background included."""
    num_classes = probs.shape[1]
    onehot = torch.stack([(target == i).float() for i in range(num_classes)], dim=1)
    loss = 0.0
    for i in range(num_classes):
        score, y = probs[:, i], onehot[:, i]
        if torch.sum(y) > 0:
            term = 1 - (2 * torch.sum(score * y) + 1e-10) / (torch.sum(score * score) + torch.sum(y * y) + 1e-10)
        else:
            beta = score / torch.sum(1 - y)
            term = torch.sum(beta.detach() * score)
        loss = loss + term
    return loss / num_classes


def stac_sdf(mask: np.ndarray) -> np.ndarray:
    """``compute_sdf_optimize``."""
    sdf = np.zeros(mask.shape)
    if np.max(mask) == 0:
        return sdf
    posmask = mask.astype(bool)
    return distance_transform_edt(~posmask) - distance_transform_edt(posmask)


def stac_flow_augment(img, gt, distance, length_weight=(1, -1, 3), magnitude=None, mode="constant"):
    """``dist_flow_map_optimized`` then ``dist_flow_augment_optimized``; ``magnitude`` None draws
    ``random.randint(-max_extent, max_extent)`` as the script does."""
    grad = np.stack([np.gradient(distance, axis=a) for a in range(3)], axis=0)
    gt = gt.astype(np.uint8)
    alpha, beta, max_extent = length_weight
    mesh = np.stack(np.meshgrid(*(range(s) for s in img.shape), indexing="ij"), axis=0)
    weight = np.repeat((np.exp(beta * np.abs(distance)) * alpha)[np.newaxis], 3, axis=0)
    if magnitude is None:
        magnitude = random.randint(-max_extent, max_extent)
    grad = (grad * weight * magnitude).astype(np.float32)
    smoothed = np.zeros_like(grad)
    for i in range(3):
        smoothed[i] = gaussian_filter(grad[i], sigma=1)
    coords = mesh + smoothed
    return map_coordinates(img, coords, order=1, mode=mode), map_coordinates(gt, coords, order=0, mode=mode)


def stac_labelled_distance(label: np.ndarray, active_class: tuple[int, ...]) -> np.ndarray:
    """The dataset's ``distance_gt`` of a cropped label: the SDF of the classes ``i`` (not ``i + 1``)
    whose ``active_class[i]`` is 1, over its largest magnitude."""
    mask = np.zeros_like(label)
    for i, is_active in enumerate(active_class):
        if is_active == 1:
            mask[label == i] = 1
    sdf = stac_sdf(mask)
    return sdf / np.abs(sdf).max()


def stac_distance_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``torch.norm(pred - gt, 1) / numel(pred) + F.mse_loss(pred, gt)``, broadcasting as the script
    does when ``target`` is (B, D, H, W) and ``predicted`` (B, 1, D, H, W)."""
    difference = predicted - target
    return torch.norm(difference, 1) / torch.numel(predicted) + torch.mean(difference**2)


STAC_ACTIVE_CLASS = {
    "synapse": (0, 0, 0, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1),
    "amos": (0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1, 0, 1),
}
