"""DHC with STAC (Gu et al., 2024: "Shape Transformation driven by Active Contour",
github.com/GuGuLL123/STAC), as its ``code/train_dhc_stac.py`` and ``code/data/data_loaders.py`` train it.

STAC's shape transformation moves each voxel along the gradient of the signed distance function
(SDF, positive outside) of a mask, by ``m * alpha exp(beta |sdf|)`` smoothed with a Gaussian of
sigma 1, ``m`` an integer drawn uniformly from ``[-max_extent, max_extent]``: the image is resampled
linearly, the labels by nearest neighbour. A negative ``m`` grows the masked organs by about a voxel
layer (``|m| >= 2``), a positive one shrinks them; voxels a few voxels away from them keep their
label. On top of DHC (DiffDW and DistDW branches, both Kaiming-initialised):

- each labelled patch is transformed with the SDF of the script's small organs (Synapse:
  gallbladder, esophagus, portal and splenic veins, pancreas and both adrenal glands; AMOS:
  gallbladder, esophagus, both adrenal glands, duodenum, prostate/uterus) before the losses;
- each network has a distance head (:class:`micd.nets.vnet_distance.DistanceVNet`); its tanh is
  regressed (mean L1 + MSE) on the labelled half to the patch's SDF divided by its largest
  magnitude, and on the unlabelled half to the other network's, detached;
- the cross pseudo supervision covers the unlabelled half only (DHC: the whole batch);
- from ``unlabelled_start_epoch`` on, each unlabelled patch is transformed along the branches' mean
  predicted distance, its labels the rounded mean of the two branches' argmax class ids, and both
  networks learn it with their weighted Dice+CE, at the cross term's weight.

Where ours differs from the script (docs/protocol.md): the script transforms the whole labelled
volume before the crop, we transform the patch, resampling beyond its border from its nearest voxel;
the script's distance target marks class ``i`` where its transformation marks class ``i + 1``
(``distance_class_offset`` -1 keeps that); a patch without any voxel of those classes has a 0/0
target in the script (a NaN loss, the whole step skipped by its gradient scaler), and is left out of
the labelled distance term here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import distance_transform_edt, gaussian_filter, map_coordinates
from torch import Tensor, nn

from micd.errors import SettingsError
from micd.methods.base import Batch, Progress, StepResult
from micd.methods.cotraining import cross_pseudo_supervision
from micd.methods.dhc import DHC, DHCSettings
from micd.methods.losses import dice_ce, hard_labels
from micd.nets.vnet_distance import DistanceVNet

DISTANCE_PAIRS = ("all", "own")

# STAC's ``active_class`` per task (data_loaders.py), as class ids: Synapse (13 organs) and AMOS (15)
STAC_DEFORMED_CLASSES: dict[int, tuple[int, ...]] = {14: (4, 5, 10, 11, 12, 13), 16: (4, 5, 11, 12, 13, 15)}


def signed_distance(mask: np.ndarray) -> np.ndarray:
    """STAC's ``compute_sdf_optimize``: the Euclidean distance to the mask outside it minus the
    distance to its complement inside it (so at least 1 in magnitude); zeros for an empty mask."""
    if not mask.any():
        return np.zeros(mask.shape)
    return distance_transform_edt(~mask) - distance_transform_edt(mask)


def shape_transform(
    image: np.ndarray,
    label: np.ndarray,
    distance: np.ndarray,
    magnitude: int,
    scale: float,
    exponent: float,
    border: str = "constant",
) -> tuple[np.ndarray, np.ndarray]:
    """STAC's ``dist_flow_augment_optimized``: every voxel resampled at its position plus the
    Gaussian-smoothed (sigma 1) ``grad(distance) * scale exp(exponent |distance|) * magnitude``;
    ``border``: how points outside the volume read (``constant``: 0, as the script)."""
    weight = scale * np.exp(exponent * np.abs(distance))
    flow = (np.stack(np.gradient(distance)) * weight * magnitude).astype(np.float32)
    smoothed = np.stack([gaussian_filter(component, sigma=1) for component in flow])
    coordinates = np.indices(distance.shape) + smoothed
    moved_image = map_coordinates(image, coordinates, order=1, mode=border)
    moved_label = map_coordinates(label.astype(np.uint8), coordinates, order=0, mode=border)
    return moved_image, moved_label


def random_magnitude(max_extent: int) -> int:
    """The script's ``random.randint(-max_extent, max_extent)``, from torch's generator."""
    return int(torch.randint(-max_extent, max_extent + 1, ()).item())


@dataclass
class DHCSTACSettings(DHCSettings):
    """STAC's settings with the values of its shell scripts (``alpha`` 1, ``bata`` -1,
    ``max_extent`` 3, ``stac_start_epoch`` 40), the unlabelled transformation's
    (``dist_flow_augment_optimized``'s defaults) being the same three."""

    deformed_classes: list[int] | None = None  # None: STAC's for Synapse and AMOS, else the rarer half
    distance_class_offset: int = -1  # the script's distance target: class i where it deforms i + 1
    flow_scale: float = 1.0  # alpha
    flow_exponent: float = -1.0  # beta ("bata")
    max_extent: int = 3
    unlabelled_start_epoch: int = 40
    distance_pairs: str = "all"  # the script's broadcast: every labelled prediction against every target


class DHCSTAC(DHC):
    name = "dhc_stac"
    display_name = "DHC+STAC"
    Settings = DHCSTACSettings

    def __init__(self, settings: DHCSTACSettings, num_classes: int, network: Callable[..., nn.Module]) -> None:
        if settings.max_extent < 0:
            raise SettingsError(f"dhc_stac: max_extent is a number of steps, 0 or more; got {settings.max_extent}")
        classes = settings.deformed_classes
        if classes is not None and not all(0 < c < num_classes for c in classes):
            raise SettingsError(f"dhc_stac: deformed_classes must be foreground class ids 1..{num_classes - 1}")
        if settings.distance_pairs not in DISTANCE_PAIRS:
            raise SettingsError(
                f"dhc_stac: distance_pairs must be one of {list(DISTANCE_PAIRS)}, got {settings.distance_pairs!r}"
            )
        super().__init__(settings, num_classes, network)
        if classes is None:
            classes = STAC_DEFORMED_CLASSES.get(num_classes, ())
        self.register_buffer("deformed", torch.zeros(num_classes, dtype=torch.bool))
        self.deformed[list(classes)] = True

    def new_network(self, init: str = "kaiming", network_class: type[nn.Module] | None = None) -> nn.Module:
        return super().new_network(init, network_class or DistanceVNet)

    def initialise(self, labelled_counts: Tensor, unlabelled_cases: int = 0) -> None:
        super().initialise(labelled_counts, unlabelled_cases)
        if self.settings.deformed_classes is None and self.num_classes not in STAC_DEFORMED_CLASSES:
            # STAC names its organs for its two data sets only; elsewhere: the foreground classes
            # rarer than the median foreground class of the labelled set
            foreground = labelled_counts[1:].double()
            self.deformed[1:] = foreground < foreground.median()

    def distance_classes(self) -> list[int]:
        offset = self.settings.distance_class_offset
        return [c + offset for c in self.deformed.nonzero().flatten().tolist() if 0 <= c + offset < self.num_classes]

    def transform_labelled(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The labelled patches and labels transformed along their small organs' SDF; the
        normalised SDF of the distance classes in them, and which patches have any."""
        s, n = self.settings, batch.n_labelled
        images = batch.image[:n, 0].detach().cpu().double().numpy()
        labels = batch.label.cpu().numpy()
        deformed = self.deformed.cpu().numpy()
        moved_images, moved_labels, targets, has_target = [], [], [], []
        for image, label in zip(images, labels):
            distance = signed_distance(deformed[label])
            image, label = shape_transform(
                image, label, distance, random_magnitude(s.max_extent), s.flow_scale, s.flow_exponent, "nearest"
            )
            target = signed_distance(np.isin(label, self.distance_classes()))
            largest = np.abs(target).max()
            moved_images.append(image)
            moved_labels.append(label.astype(np.int64))
            targets.append(target / largest if largest > 0 else target)
            has_target.append(largest > 0)
        device, dtype = batch.image.device, batch.image.dtype
        as_tensor = lambda arrays, **kw: torch.from_numpy(np.stack(arrays)).to(device, **kw)  # noqa: E731
        return (
            as_tensor(moved_images, dtype=dtype).unsqueeze(1),
            as_tensor(moved_labels),
            as_tensor(targets, dtype=torch.float32).unsqueeze(1),
            torch.tensor(has_target, device=device),
        )

    def transform_unlabelled(self, image: Tensor, distance: Tensor, pseudo_label: Tensor) -> tuple[Tensor, Tensor]:
        """The unlabelled patches and their pseudo-labels transformed along the predicted distance."""
        s = self.settings
        moved_images, moved_labels = [], []
        for one_image, one_distance, one_label in zip(
            image[:, 0].detach().cpu().double().numpy(),
            distance[:, 0].cpu().double().numpy(),
            pseudo_label.cpu().numpy(),
        ):
            moved = shape_transform(
                one_image, one_label, one_distance, random_magnitude(s.max_extent), s.flow_scale, s.flow_exponent
            )
            moved_images.append(moved[0])
            moved_labels.append(moved[1].astype(np.int64))
        return (
            torch.from_numpy(np.stack(moved_images)).to(image.device, image.dtype).unsqueeze(1),
            torch.from_numpy(np.stack(moved_labels)).to(image.device),
        )

    def training_step(self, batch: Batch, progress: Progress) -> StepResult:
        n = batch.n_labelled
        image_l, label_l, target_l, has_target = self.transform_labelled(batch)
        batch = Batch(image=torch.cat([image_l, batch.image[n:]]), label=label_l)
        p_a, d_a = self.student_a.with_distance(batch.image)
        p_b, d_b = self.student_b.with_distance(batch.image)
        d_a, d_b = d_a.float().tanh(), d_b.float().tanh()
        w_a, w_b = self.class_weights(p_a, p_b, batch)
        sup = self.supervised_loss(p_a, p_b, batch, w_a, w_b)
        pairs = self.settings.distance_pairs
        distance_sup = sum(labelled_distance_loss(d[:n], target_l, has_target, pairs) for d in (d_a, d_b))
        cross = cross_pseudo_supervision(p_a[n:], p_b[n:], p_a[n:], p_b[n:], w_a, w_b)
        distance_cross = distance_loss(d_a[n:], d_b[n:].detach()) + distance_loss(d_b[n:], d_a[n:].detach())
        beta = self.consistency_weight(progress)
        terms = {"cps": cross, "distance_cross": distance_cross}
        if progress.epoch >= self.settings.unlabelled_start_epoch:
            mean_distance = ((d_a[n:] + d_b[n:]) / 2).detach()
            pseudo_label = torch.round((hard_labels(p_a[n:]) + hard_labels(p_b[n:])) / 2).long()
            image_u, label_u = self.transform_unlabelled(batch.image[n:], mean_distance, pseudo_label)
            terms["transformed"] = dice_ce(self.student_a(image_u), label_u, w_a) + dice_ce(
                self.student_b(image_u), label_u, w_b
            )
        result = self.loss_terms(sup + distance_sup, beta, **terms)
        result.losses["distance_sup"] = distance_sup.detach()
        return result


def distance_loss(predicted: Tensor, target: Tensor) -> Tensor:
    """STAC's distance regression: mean absolute error plus mean squared error (0 without voxels)."""
    if predicted.numel() == 0:
        return predicted.sum()
    return (predicted - target).abs().mean() + F.mse_loss(predicted, target)


def labelled_distance_loss(predicted: Tensor, target: Tensor, has_target: Tensor, pairs: str) -> Tensor:
    """The labelled distance term of one network, over the patches that have a target. ``own``: each
    prediction against its patch's target. ``all``: as the script computes it, where the (B, 1, D, H, W)
    prediction minus the (B, D, H, W) target broadcasts to every prediction against every target:
    the summed absolute difference over the prediction's size plus the mean squared difference."""
    if pairs == "own":
        return distance_loss(predicted[has_target], target[has_target])
    difference = predicted[:, None, 0] - target[None, has_target, 0]
    if difference.numel() == 0:
        return difference.sum()
    return difference.abs().sum() / predicted.numel() + difference.square().mean()
