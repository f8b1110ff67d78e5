"""Synthetic multi-organ abdominal CT phantom, written in AMOS 2022's archive layout.

This is the project's embedded default data set: nothing is downloaded. Each case is a
small CT-like volume (int16 HU) with a label map carrying AMOS's 15 organ ids. Anatomy is
laid out in patient millimetres (RAS: +x patient right, +y anterior, +z superior) and
varied per case by size, position, rotation, a smooth random deformation and per-organ
shape wobble; intensities get per-organ texture, partial-volume blur, a smooth bias and
noise. See ``docs/synthetic.md`` for the organ sizes and what makes the phantom hard.

Usage::

    generate_archive(Path("results/synthetic/archive"), n_train=40, n_validation=8, seed=0)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from micd.data.classes import AMOS_CLASSES
from micd.data.io import Volume, atomic_dir, atomic_write, save_nifti

AIR_HU = -1000.0
FAT_HU = -95.0
MUSCLE_HU = 50.0

# label -> (mean HU, texture std HU). Portal-venous-like contrast: vessels and kidneys bright,
# liver/spleen/pancreas/bowel close together so their borders are low contrast.
ORGAN_HU: dict[int, tuple[float, float]] = {
    1: (50.0, 8.0),  # spleen
    2: (150.0, 18.0),  # right kidney
    3: (150.0, 18.0),  # left kidney
    4: (10.0, 4.0),  # gallbladder
    5: (40.0, 8.0),  # esophagus
    6: (60.0, 8.0),  # liver
    7: (40.0, 10.0),  # stomach (wall; lumen below)
    8: (180.0, 6.0),  # aorta
    9: (140.0, 10.0),  # inferior vena cava
    10: (45.0, 12.0),  # pancreas
    11: (45.0, 8.0),  # right adrenal gland
    12: (45.0, 8.0),  # left adrenal gland
    13: (40.0, 10.0),  # duodenum (wall; lumen below)
    14: (5.0, 4.0),  # bladder
    15: (45.0, 10.0),  # prostate (uterus: +15 HU)
}
# Organs whose HU scales with the per-case contrast enhancement.
ENHANCING = (2, 3, 8, 9)


@dataclass(frozen=True)
class SizeOptions:
    """Ranges (inclusive) of the volume size drawn per case."""

    inplane: tuple[int, int] = (96, 128)
    slices: tuple[int, int] = (40, 64)


class _Shape(Protocol):
    def bounds(self) -> tuple[np.ndarray, np.ndarray]: ...

    def anchor(self) -> np.ndarray: ...

    def inside(self, p: list[np.ndarray], scale: float = 1.0) -> np.ndarray: ...


@dataclass(frozen=True)
class _Ellipsoid:
    """Rotated ellipsoid whose radius wobbles smoothly with direction."""

    center: np.ndarray
    semi: np.ndarray
    rotation: np.ndarray  # columns: the local axes in world coordinates
    wobble: np.ndarray  # rows: kx, ky, kz, phase, amplitude

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        r = self.semi.max() * (1.0 + self.wobble[:, 4].sum())
        return self.center - r, self.center + r

    def anchor(self) -> np.ndarray:
        return self.center

    def inside(self, p: list[np.ndarray], scale: float = 1.0) -> np.ndarray:
        # Python floats keep the float32 coordinate arrays in float32 (NEP 50).
        center, semi, rot = self.center.tolist(), self.semi.tolist(), self.rotation.tolist()
        d = [p[a] - center[a] for a in range(3)]
        q = [sum(rot[b][a] * d[b] for b in range(3)) / semi[a] for a in range(3)]
        radius = 1.0 + sum(w[4] * np.sin(w[0] * q[0] + w[1] * q[1] + w[2] * q[2] + w[3]) for w in self.wobble.tolist())
        return q[0] ** 2 + q[1] ** 2 + q[2] ** 2 < (scale * radius) ** 2


@dataclass(frozen=True)
class _Tube:
    """Tube around a polyline, radius interpolated linearly along each segment."""

    points: np.ndarray  # (n, 3)
    radii: np.ndarray  # (n,)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        r = self.radii.max()
        return self.points.min(axis=0) - r, self.points.max(axis=0) + r

    def anchor(self) -> np.ndarray:
        return self.points[len(self.points) // 2]

    def inside(self, p: list[np.ndarray], scale: float = 1.0) -> np.ndarray:
        result = np.zeros(np.broadcast_shapes(*(a.shape for a in p)), dtype=bool)
        points, radii = self.points.tolist(), self.radii.tolist()
        for a, b, ra, rb in zip(points[:-1], points[1:], radii[:-1], radii[1:]):
            ab = [b[k] - a[k] for k in range(3)]
            t = sum((p[k] - a[k]) * ab[k] for k in range(3)) / sum(v * v for v in ab)
            t = np.clip(t, 0.0, 1.0)
            dist2 = sum((p[k] - a[k] - t * ab[k]) ** 2 for k in range(3))
            result |= dist2 < (scale * (ra + t * (rb - ra))) ** 2
        return result


@dataclass(frozen=True)
class _Part:
    """One painted structure: an organ (label set) or a tissue detail (label kept)."""

    shape: _Shape
    hu: float
    texture: float
    label: int | None = None
    within: int | None = None  # paint only voxels already carrying this label
    scale: float = 1.0


@dataclass(frozen=True)
class _Warp:
    """Smooth random displacement, a sum of long-wavelength sinusoids (mm)."""

    waves: np.ndarray  # rows: kx, ky, kz, phase, amplitude, axis

    @property
    def max_shift(self) -> float:
        return float(np.abs(self.waves[:, 4]).sum())

    def __call__(self, p: list[np.ndarray]) -> list[np.ndarray]:
        out = list(p)
        for kx, ky, kz, phase, amp, axis in self.waves.tolist():
            out[int(axis)] = out[int(axis)] + amp * np.sin(kx * p[0] + ky * p[1] + kz * p[2] + phase)
        return out


@dataclass
class _Canvas:
    """Label, HU and texture-amplitude arrays over a grid whose world axes are separable."""

    axes: tuple[np.ndarray, np.ndarray, np.ndarray]  # world mm of each voxel index, per axis
    warp: _Warp
    allowed: np.ndarray  # voxels organs may occupy (the body cavity)
    hu: np.ndarray
    texture: np.ndarray
    label: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.label = np.zeros(self.hu.shape, dtype=np.uint8)

    def paint(self, part: _Part) -> None:
        lo, hi = part.shape.bounds()
        pad = self.warp.max_shift
        box = tuple(_index_range(axis, lo[a] - pad, hi[a] + pad) for a, axis in enumerate(self.axes))
        if any(s.start >= s.stop for s in box):
            return
        grids = [self.axes[a][box[a]].reshape([-1 if b == a else 1 for b in range(3)]) for a in range(3)]
        mask = part.shape.inside(self.warp(grids), part.scale) & self.allowed[box]
        if part.within is not None:
            mask &= self.label[box] == part.within
        self.hu[box][mask] = part.hu
        self.texture[box][mask] = part.texture
        if part.label is not None:
            self.label[box][mask] = part.label

    def nearest_voxel(self, point: np.ndarray) -> tuple[int, int, int]:
        shifted = point - (np.array(self.warp([point[0:1], point[1:2], point[2:3]])).ravel() - point)
        return tuple(int(np.abs(self.axes[a] - shifted[a]).argmin()) for a in range(3))  # type: ignore[return-value]


def _index_range(axis: np.ndarray, lo: float, hi: float) -> slice:
    idx = np.nonzero((axis >= lo) & (axis <= hi))[0]
    return slice(int(idx[0]), int(idx[-1]) + 1) if idx.size else slice(0, 0)


def _chaikin(points: np.ndarray, radii: np.ndarray, rounds: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Smooth a polyline by corner cutting, keeping its end points."""
    values = np.column_stack([points, radii])
    for _ in range(rounds):
        a, b = values[:-1], values[1:]
        cut = np.empty((2 * len(a), values.shape[1]))
        cut[0::2], cut[1::2] = 0.75 * a + 0.25 * b, 0.25 * a + 0.75 * b
        values = np.vstack([values[:1], cut, values[-1:]])
    return values[:, :3], values[:, 3]


class _Anatomy:
    """Draws one case's randomised organ shapes around a fixed mean layout (mm, RAS)."""

    def __init__(self, rng: np.random.Generator, scale: float) -> None:
        self.rng, self.s = rng, scale

    def ellipsoid(self, center: tuple, semi: tuple, rotvec: tuple = (0, 0, 0), size: float = 1.0) -> _Ellipsoid:
        rng, s = self.rng, self.s
        semi_mm = np.array(semi) * s * size * rng.uniform(0.85, 1.15) * rng.uniform(0.92, 1.08, 3)
        rotation = Rotation.from_rotvec(np.array(rotvec) + rng.normal(0.0, 0.12, 3)).as_matrix()
        directions = rng.normal(size=(3, 3))
        directions *= rng.uniform(1.5, 3.0, (3, 1)) / np.linalg.norm(directions, axis=1, keepdims=True)
        wobble = np.column_stack([directions, rng.uniform(0, 2 * np.pi, 3), rng.uniform(0.03, 0.08, 3)])
        return _Ellipsoid(np.array(center) * s + rng.normal(0.0, 5.0 * s, 3), semi_mm, rotation, wobble)

    def tube(self, points: list[tuple], radii: list[float]) -> _Tube:
        rng, s = self.rng, self.s
        pts = np.array(points, dtype=float) * s + rng.normal(0.0, 4.0 * s, (len(points), 3))
        r = np.array(radii, dtype=float) * s * rng.uniform(0.85, 1.15)
        return _Tube(*_chaikin(pts, r))

    def parts(self) -> list[_Part]:
        """Painting order: later parts overwrite earlier ones, the smallest organs come last."""
        rng, e, t = self.rng, self.ellipsoid, self.tube
        enhancement = rng.uniform(0.8, 1.2)

        def organ(label: int, shape: _Shape, hu_shift: float = 0.0) -> _Part:
            mean, texture = ORGAN_HU[label]
            if label in ENHANCING:
                mean = 40.0 + enhancement * (mean - 40.0)
            return _Part(shape, mean + hu_shift + rng.normal(0.0, 5.0), texture, label=label)

        stomach = e((-50, 25, 70), (42, 35, 55), (0.3, 0.2, -0.4))
        duodenum = t([(5, 40, 55), (35, 25, 45), (58, 5, 20), (55, 0, -15), (25, -5, -30), (-15, -5, -25), (-25, 5, -5)], [11] * 7)
        right_kidney = e((65, -45, -10), (27, 25, 55), (0.2, 0.25, 0))
        left_kidney = e((-65, -45, 5), (27, 25, 55), (0.2, -0.25, 0))
        male = rng.random() < 0.5
        parts = [
            _Part(e((80, -20, 240), (70, 70, 110)), -850.0, 30.0),  # lung bases
            _Part(e((-80, -20, 240), (70, 70, 110)), -850.0, 30.0),
            _Part(t([(30, -62, 40), (45, -52, -150)], [8, 22]), MUSCLE_HU, 8.0),  # psoas
            _Part(t([(-30, -62, 40), (-45, -52, -150)], [8, 22]), MUSCLE_HU, 8.0),
            _Part(t([(0, -78, 300), (0, -75, 0), (0, -70, -300)], [18, 20, 22]), 350.0, 60.0),  # spine
            organ(7, stomach),
            _Part(stomach, 15.0, 5.0, within=7, scale=0.75),  # fluid lumen
            _Part(e((-45, 45, 90), (25, 14, 25)), -800.0, 20.0, within=7),  # gas, anterior in a supine patient
            organ(6, e((55, -5, 85), (65, 72, 68))),  # liver, right lobe
            organ(6, e((-25, 35, 100), (50, 32, 38), (0, 0, 0.3))),  # liver, left lobe
            organ(1, e((-90, -45, 80), (25, 42, 50), (0.4, 0, 0.3))),
            organ(2, right_kidney),
            _Part(right_kidney, 15.0, 6.0, within=2, scale=0.35),  # renal pelvis
            organ(3, left_kidney),
            _Part(left_kidney, 15.0, 6.0, within=3, scale=0.35),
            organ(13, duodenum),
            _Part(duodenum, 20.0, 5.0, within=13, scale=0.55),
            organ(10, t([(38, 5, 20), (5, 15, 28), (-40, 5, 38), (-75, -20, 50)], [15, 12, 10, 8])),
            organ(4, e((45, 50, 35), (15, 15, 32), (0.5, 0, 0.3))),
            organ(14, e((0, 35, -215), (42, 35, 33), size=rng.uniform(0.75, 1.15))),  # bladder filling varies
            organ(15, e((0, 5, -252), (20, 16, 17)) if male else e((0, -5, -195), (30, 22, 38)), 0.0 if male else 15.0),
            organ(9, t([(22, -20, 260), (22, -28, 60), (25, -30, -140)], [12, 12, 11])),
            organ(8, t([(-5, -38, 260), (-12, -40, 60), (-10, -32, -130)], [11, 11, 9])),
            organ(5, t([(-5, -25, 260), (-15, -15, 150), (-35, 10, 105)], [8, 8, 8])),
            organ(11, e((42, -40, 55), (12, 5, 20), (0, 0, 0.6))),
            organ(12, e((-42, -35, 50), (12, 5, 20), (0, 0, -0.6))),
        ]
        return parts


def _linear_weights(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) matrix of linear interpolation from n_in to n_out cell-centred samples."""
    pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    weights = np.zeros((n_out, n_in), dtype=np.float32)
    np.add.at(weights, (np.arange(n_out), lo), 1 - pos + lo)
    np.add.at(weights, (np.arange(n_out), hi), pos - lo)
    return weights


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], coarse: tuple[int, ...]) -> np.ndarray:
    """Zero-mean, unit-std random field varying over ``shape / coarse`` voxels."""
    field = rng.standard_normal(coarse).astype(np.float32)
    for axis, n in enumerate(shape):  # separable upsampling: one small matrix product per axis
        field = np.moveaxis(np.tensordot(_linear_weights(n, coarse[axis]), field, axes=(1, axis)), 0, axis)
    return (field - field.mean()) / (field.std() + 1e-6)


def generate_case(seed: int, case_index: int, sizes: SizeOptions = SizeOptions()) -> tuple[Volume, Volume]:
    """One phantom case (image in int16 HU, label in uint8), from ``default_rng([seed, case_index])``."""
    rng = np.random.default_rng([seed, case_index])
    s = rng.uniform(0.88, 1.12)  # patient size
    n_xy = int(rng.integers(sizes.inplane[0], sizes.inplane[1] + 1))
    n_z = int(rng.integers(sizes.slices[0], sizes.slices[1] + 1))
    body_a, body_b = 165.0 * s * rng.uniform(0.95, 1.05), 120.0 * s * rng.uniform(0.92, 1.08)
    fat, wall = rng.uniform(8.0, 30.0) * s, 10.0 * s

    # Stored like a DICOM-derived CT (LPS voxel order); conversion reorients it to RAS.
    spacing_xy = 2 * body_a * rng.uniform(1.12, 1.3) / n_xy
    z_top, z_bottom = 200.0 * s + rng.uniform(-10, 15), -285.0 * s + rng.uniform(-15, 10)
    spacing_z = (z_top - z_bottom) / n_z
    origin = np.array([spacing_xy * n_xy / 2 + rng.uniform(-10, 10), spacing_xy * n_xy / 2 + rng.uniform(-10, 20), z_bottom])
    steps = np.array([-spacing_xy, -spacing_xy, spacing_z])
    axes = tuple((origin[a] + steps[a] * np.arange(n)).astype(np.float32) for a, n in enumerate((n_xy, n_xy, n_z)))
    affine = np.diag([*steps, 1.0])
    affine[:3, 3] = origin

    x, y, z = axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]
    girth = 1.0 + 0.04 * np.sin(2 * np.pi * z / 400.0 + rng.uniform(0, 2 * np.pi))

    def ellipse(shrink: float) -> np.ndarray:
        return (x / (body_a * girth - shrink)) ** 2 + (y / (body_b * girth - shrink)) ** 2 < 1.0

    shape = (n_xy, n_xy, n_z)
    body, muscle, cavity = ellipse(0.0), ellipse(fat), ellipse(fat + wall)
    hu = np.full(shape, AIR_HU, dtype=np.float32)
    texture = np.zeros(shape, dtype=np.float32)
    hu[body], texture[body] = FAT_HU, 10.0
    hu[muscle], texture[muscle] = MUSCLE_HU, 8.0
    # Cavity background: bowel loops (fluid, some gas) in mesenteric fat, less bowel posteriorly.
    bowel = _smooth_field(rng, shape, (max(2, n_xy // 10),) * 2 + (max(2, n_z // 5),)) + 1.2 * y / body_b
    cavity_hu = np.where(bowel > 0.2, 25.0, FAT_HU)
    cavity_hu[bowel > 1.8] = -700.0
    hu[cavity] = np.broadcast_to(cavity_hu, shape)[cavity]
    texture[cavity] = 12.0

    waves = np.column_stack([
        rng.normal(size=(6, 3)) * (2 * np.pi / rng.uniform(150, 300, (6, 1))) / np.sqrt(3),
        rng.uniform(0, 2 * np.pi, 6),
        rng.uniform(2.0, 5.0, 6) * s,
        np.repeat(np.arange(3), 2),
    ])
    canvas = _Canvas(axes, _Warp(waves), cavity, hu, texture)
    parts = _Anatomy(rng, s).parts()
    for part in parts:
        canvas.paint(part)
    # On a very coarse grid a tiny organ can fall between voxel centres: keep every class present.
    for part in parts:
        if part.label is not None and not (canvas.label == part.label).any():
            voxel = canvas.nearest_voxel(part.shape.anchor())
            canvas.label[voxel], canvas.hu[voxel] = part.label, part.hu

    image = _acquire(rng, canvas.hu, canvas.texture, spacing=(spacing_xy, spacing_xy, spacing_z))
    return Volume(image, affine), Volume(canvas.label, affine.copy())


def _acquire(rng: np.random.Generator, hu: np.ndarray, texture: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Texture, partial-volume blur, smooth additive bias and noise, as int16 HU."""
    grain = ndimage.gaussian_filter(rng.standard_normal(hu.shape, dtype=np.float32), sigma=(1.0, 1.0, 0.6))
    image = hu + texture * grain / (grain.std() + 1e-6)
    image = ndimage.gaussian_filter(image, sigma=(0.6, 0.6, 0.4))
    u = [np.linspace(-1, 1, n, dtype=np.float32) for n in hu.shape]
    bias = np.zeros((), dtype=np.float32)
    for _ in range(2):
        k, phase = rng.uniform(0.5, 1.5, 3), rng.uniform(0, 2 * np.pi, 3)
        terms = [np.cos(k[a] * np.pi * u[a] + phase[a]).reshape([-1 if b == a else 1 for b in range(3)]) for a in range(3)]
        bias = bias + rng.uniform(4.0, 10.0) * terms[0] * terms[1] * terms[2]
    image = image + bias + rng.uniform(8.0, 20.0) * rng.standard_normal(hu.shape, dtype=np.float32)
    return np.clip(np.rint(image), -1024, 3071).astype(np.int16)


def dataset_json(train_ids: list[str], validation_ids: list[str]) -> dict:
    """An AMOS-style ``dataset.json`` for the given case ids."""

    def entries(ids: list[str], tag: str) -> list[dict[str, str]]:
        return [{"image": f"./images{tag}/{i}.nii.gz", "label": f"./labels{tag}/{i}.nii.gz"} for i in ids]

    return {
        "name": "AMOS-synthetic",
        "description": "Synthetic multi-organ abdominal CT phantom in AMOS 2022's layout (micd.data.synthetic)",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": {str(c.label): c.name for c in AMOS_CLASSES},
        "numTraining": len(train_ids),
        "numValidation": len(validation_ids),
        "numTest": 0,
        "training": entries(train_ids, "Tr"),
        "validation": entries(validation_ids, "Va"),
        "test": [],
    }


def generate_archive(
    out_dir: Path,
    n_train: int,
    n_validation: int,
    seed: int,
    *,
    inplane: tuple[int, int] = SizeOptions.inplane,
    slices: tuple[int, int] = SizeOptions.slices,
) -> None:
    """Write ``n_train`` + ``n_validation`` phantom cases to ``out_dir`` in AMOS's archive layout.

    Case ids run ``amos_0001`` .. on across ``imagesTr`` then ``imagesVa``; case ``amos_k`` is
    drawn from ``default_rng([seed, k])``, so it is the same whatever ``n_train`` is. The same
    arguments give byte-identical files. ``out_dir`` appears complete or not at all.
    """
    if n_train < 1 or n_validation < 0:
        raise ValueError(f"expected n_train >= 1 and n_validation >= 0, got {n_train} and {n_validation}")
    if not (0 < inplane[0] <= inplane[1] and 0 < slices[0] <= slices[1]):
        raise ValueError(f"expected size ranges (low, high) with 0 < low <= high, got {inplane} and {slices}")
    sizes = SizeOptions(tuple(inplane), tuple(slices))  # type: ignore[arg-type]
    ids = [f"amos_{k:04d}" for k in range(1, n_train + n_validation + 1)]
    with atomic_dir(out_dir) as tmp:
        for name in ("imagesTr", "labelsTr", "imagesVa", "labelsVa"):
            (tmp / name).mkdir()
        for k, case_id in enumerate(ids, start=1):
            tag = "Tr" if k <= n_train else "Va"
            image, label = generate_case(seed, k, sizes)
            save_nifti(tmp / f"images{tag}" / f"{case_id}.nii.gz", image)
            save_nifti(tmp / f"labels{tag}" / f"{case_id}.nii.gz", label)
        meta = dataset_json(ids[:n_train], ids[n_train:])
        atomic_write(tmp / "dataset.json", json.dumps(meta, indent=4) + "\n")
