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

from micd.atomic import atomic_write, stage_output_dir
from micd.data.classes import AMOS_CLASSES
from micd.data.io import Volume, save_nifti
from micd.errors import SettingsError

AIR_HU = -1000.0
LUNG_HU = -850.0
FAT_HU = -95.0
MUSCLE_HU = 50.0
BONE_HU = 350.0

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
        center, semi, rot = (
            self.center.tolist(),
            self.semi.tolist(),
            self.rotation.tolist(),
        )
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


@dataclass(frozen=True)
class _Body:
    """Elliptic body cross-section (mm): semi-axes, fat layer and muscle wall thickness."""

    a: float
    b: float
    fat: float
    wall: float


@dataclass
class _Canvas:
    """Label, HU and texture-amplitude arrays over a grid with separable world axes."""

    axes: tuple[np.ndarray, ...]  # world mm of each voxel index, per array axis
    warp: _Warp
    allowed: np.ndarray  # voxels organs may occupy (the body cavity)
    hu: np.ndarray
    texture: np.ndarray
    label: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.label = np.zeros(self.hu.shape, dtype=np.uint8)

    def paint(self, part: _Part) -> None:
        """Paint a part inside its bounding box only (organs are small next to the grid)."""
        lo, hi = part.shape.bounds()
        pad = self.warp.max_shift
        box = tuple(_index_range(axis, lo[a] - pad, hi[a] + pad) for a, axis in enumerate(self.axes))
        if any(s.start >= s.stop for s in box):
            return
        grids = [_along(self.axes[a][box[a]], a) for a in range(3)]
        mask = part.shape.inside(self.warp(grids), part.scale) & self.allowed[box]
        if part.within is not None:
            mask &= self.label[box] == part.within
        self.hu[box][mask] = part.hu
        self.texture[box][mask] = part.texture
        if part.label is not None:
            self.label[box][mask] = part.label

    def keep_present(self, parts: list[_Part]) -> None:
        """Give an organ that fell between voxel centres (very coarse grids) one voxel."""
        for part in parts:
            if part.label is None or (self.label == part.label).any():
                continue
            anchor = part.shape.anchor()
            warped = np.array(self.warp([anchor[a : a + 1] for a in range(3)])).ravel()
            source = 2 * anchor - warped  # approximately inverts the warp
            voxel = tuple(int(np.abs(self.axes[a] - source[a]).argmin()) for a in range(3))
            self.label[voxel], self.hu[voxel] = part.label, part.hu


def _along(values: np.ndarray, axis: int) -> np.ndarray:
    """A 1-D array shaped to broadcast along one axis of a 3-D array."""
    return values.reshape([-1 if b == axis else 1 for b in range(3)])


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


Point = tuple[float, float, float]


class _Anatomy:
    """Draws one case's organ shapes around a fixed mean layout (mm, RAS, size 1)."""

    def __init__(self, rng: np.random.Generator, scale: float) -> None:
        self.rng, self.s = rng, scale

    def ellipsoid(self, center: Point, semi: Point, rotvec: Point = (0, 0, 0), size: float = 1.0) -> _Ellipsoid:
        rng, s = self.rng, self.s
        size *= rng.uniform(0.85, 1.15)
        semi_mm = np.array(semi) * s * size * rng.uniform(0.92, 1.08, 3)
        rotvec_jittered = np.array(rotvec) + rng.normal(0.0, 0.12, 3)
        rotation = Rotation.from_rotvec(rotvec_jittered).as_matrix()
        directions = rng.normal(size=(3, 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        directions *= rng.uniform(1.5, 3.0, (3, 1))
        phases, amplitudes = rng.uniform(0, 2 * np.pi, 3), rng.uniform(0.03, 0.08, 3)
        wobble = np.column_stack([directions, phases, amplitudes])
        center_mm = np.array(center) * s + rng.normal(0.0, 5.0 * s, 3)
        return _Ellipsoid(center_mm, semi_mm, rotation, wobble)

    def tube(self, points: list[Point], radii: list[float]) -> _Tube:
        rng, s = self.rng, self.s
        jitter = rng.normal(0.0, 4.0 * s, (len(points), 3))
        pts = np.array(points, dtype=float) * s + jitter
        r = np.array(radii, dtype=float) * s * rng.uniform(0.85, 1.15)
        return _Tube(*_chaikin(pts, r))

    def parts(self) -> list[_Part]:
        """Painting order: later parts overwrite earlier ones, smallest organs last."""
        rng, e, t = self.rng, self.ellipsoid, self.tube
        enhancement = rng.uniform(0.8, 1.2)

        def organ(label: int, shape: _Shape, hu_shift: float = 0.0) -> _Part:
            mean, texture = ORGAN_HU[label]
            if label in ENHANCING:
                mean = 40.0 + enhancement * (mean - 40.0)
            mean += hu_shift + rng.normal(0.0, 5.0)
            return _Part(shape, mean, texture, label=label)

        stomach = e((-50, 25, 70), (42, 35, 55), (0.3, 0.2, -0.4))
        duodenum_path = [(5, 40, 55), (35, 25, 45), (58, 5, 20), (55, 0, -15)]
        duodenum_path += [(25, -5, -30), (-15, -5, -25), (-25, 5, -5)]
        duodenum = t(duodenum_path, [11] * 7)
        right_kidney = e((65, -45, -10), (27, 25, 55), (0.2, 0.25, 0))
        left_kidney = e((-65, -45, 5), (27, 25, 55), (0.2, -0.25, 0))
        pancreas_path = [(38, 5, 20), (5, 15, 28), (-40, 5, 38), (-75, -20, 50)]
        bladder_filling = rng.uniform(0.75, 1.15)
        if rng.random() < 0.5:
            prostate_or_uterus = organ(15, e((0, 5, -252), (20, 16, 17)))
        else:
            prostate_or_uterus = organ(15, e((0, -5, -195), (30, 22, 38)), 15.0)
        ivc_path = [(22, -20, 260), (22, -28, 60), (25, -30, -140)]
        aorta_path = [(-5, -38, 260), (-12, -40, 60), (-10, -32, -130)]
        esophagus_path = [(-5, -25, 260), (-15, -15, 150), (-35, 10, 105)]
        spine_path = [(0, -78, 300), (0, -75, 0), (0, -70, -300)]
        return [
            # tissues outside the organ classes
            _Part(e((80, -20, 240), (70, 70, 110)), LUNG_HU, 30.0),
            _Part(e((-80, -20, 240), (70, 70, 110)), LUNG_HU, 30.0),
            _Part(t([(30, -62, 40), (45, -52, -150)], [8, 22]), MUSCLE_HU, 8.0),
            _Part(t([(-30, -62, 40), (-45, -52, -150)], [8, 22]), MUSCLE_HU, 8.0),
            _Part(t(spine_path, [18, 20, 22]), BONE_HU, 60.0),
            # organs; details inside an organ keep its label
            organ(7, stomach),
            _Part(stomach, 15.0, 5.0, within=7, scale=0.75),  # fluid
            _Part(e((-45, 45, 90), (25, 14, 25)), -800.0, 20.0, within=7),  # gas
            organ(6, e((55, -5, 85), (65, 72, 68))),  # liver, right lobe
            organ(6, e((-25, 35, 100), (50, 32, 38), (0, 0, 0.3))),  # left lobe
            organ(1, e((-90, -45, 80), (25, 42, 50), (0.4, 0, 0.3))),
            organ(2, right_kidney),
            _Part(right_kidney, 15.0, 6.0, within=2, scale=0.35),  # renal pelvis
            organ(3, left_kidney),
            _Part(left_kidney, 15.0, 6.0, within=3, scale=0.35),
            organ(13, duodenum),
            _Part(duodenum, 20.0, 5.0, within=13, scale=0.55),
            organ(10, t(pancreas_path, [15, 12, 10, 8])),
            organ(4, e((45, 50, 35), (15, 15, 32), (0.5, 0, 0.3))),
            organ(14, e((0, 35, -215), (42, 35, 33), size=bladder_filling)),
            prostate_or_uterus,
            organ(9, t(ivc_path, [12, 12, 11])),
            organ(8, t(aorta_path, [11, 11, 9])),
            organ(5, t(esophagus_path, [8, 8, 8])),
            organ(11, e((42, -40, 55), (12, 5, 20), (0, 0, 0.6))),
            organ(12, e((-42, -35, 50), (12, 5, 20), (0, 0, -0.6))),
        ]


def _linear_weights(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) linear interpolation from n_in to n_out cell-centred samples."""
    pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    weights = np.zeros((n_out, n_in), dtype=np.float32)
    np.add.at(weights, (np.arange(n_out), lo), 1 - pos + lo)
    np.add.at(weights, (np.arange(n_out), hi), pos - lo)
    return weights


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], coarse: tuple[int, ...]) -> np.ndarray:
    """Zero-mean, unit-std random field varying over ``shape / coarse`` voxels."""
    values = rng.standard_normal(coarse).astype(np.float32)
    # Separable upsampling: one small matrix product per axis.
    for axis, n in enumerate(shape):
        weights = _linear_weights(n, coarse[axis])
        values = np.moveaxis(np.tensordot(weights, values, axes=(1, axis)), 0, axis)
    return (values - values.mean()) / (values.std() + 1e-6)


def _scan_grid(
    rng: np.random.Generator, s: float, body: _Body, sizes: SizeOptions
) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """World mm of each voxel index per axis, and the affine.

    Voxels are stored in L-P-S order, like a DICOM-derived CT; conversion reorients to RAS.
    """
    n_xy = int(rng.integers(sizes.inplane[0], sizes.inplane[1] + 1))
    n_z = int(rng.integers(sizes.slices[0], sizes.slices[1] + 1))
    spacing_xy = 2 * body.a * rng.uniform(1.12, 1.3) / n_xy
    z_top = 200.0 * s + rng.uniform(-10, 15)  # lung bases ...
    z_bottom = -285.0 * s + rng.uniform(-15, 10)  # ... to below the prostate
    half_fov = spacing_xy * n_xy / 2
    origin = np.array([half_fov + rng.uniform(-10, 10), half_fov + rng.uniform(-10, 20), z_bottom])
    steps = np.array([-spacing_xy, -spacing_xy, (z_top - z_bottom) / n_z])
    axes = tuple((origin[a] + steps[a] * np.arange(n)).astype(np.float32) for a, n in enumerate((n_xy, n_xy, n_z)))
    affine = np.diag([*steps, 1.0])
    affine[:3, 3] = origin
    return axes, affine


def _body_tissues(
    rng: np.random.Generator, axes: tuple[np.ndarray, ...], body: _Body
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The cavity mask and HU and texture arrays of air, body wall and bowel in fat."""
    x, y, z = (_along(axes[a], a) for a in range(3))
    girth = 1.0 + 0.04 * np.sin(2 * np.pi * z / 400.0 + rng.uniform(0, 2 * np.pi))

    def ellipse(shrink: float) -> np.ndarray:
        rx, ry = body.a * girth - shrink, body.b * girth - shrink
        return (x / rx) ** 2 + (y / ry) ** 2 < 1.0

    shape = tuple(len(a) for a in axes)
    inside, muscle = ellipse(0.0), ellipse(body.fat)
    cavity = ellipse(body.fat + body.wall)
    hu = np.full(shape, AIR_HU, dtype=np.float32)
    texture = np.zeros(shape, dtype=np.float32)
    hu[inside], texture[inside] = FAT_HU, 10.0
    hu[muscle], texture[muscle] = MUSCLE_HU, 8.0
    # Bowel loops (some gas) in mesenteric fat; more fat posteriorly (retroperitoneum).
    coarse = (max(2, shape[0] // 10), max(2, shape[1] // 10), max(2, shape[2] // 5))
    bowel = _smooth_field(rng, shape, coarse) + 1.2 * y / body.b
    cavity_hu = np.where(bowel > 0.2, 25.0, FAT_HU).astype(np.float32)
    cavity_hu[bowel > 1.8] = -700.0
    hu[cavity], texture[cavity] = cavity_hu[cavity], 12.0
    return cavity, hu, texture


def _random_warp(rng: np.random.Generator, s: float) -> _Warp:
    """Six sinusoids, two per displacement axis, 2-5 mm each, wavelengths 150-300 mm."""
    directions = rng.normal(size=(6, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    wave_numbers = directions * (2 * np.pi / rng.uniform(150, 300, (6, 1)))
    phases, amplitudes = rng.uniform(0, 2 * np.pi, 6), rng.uniform(2.0, 5.0, 6) * s
    axis = np.repeat(np.arange(3), 2)
    return _Warp(np.column_stack([wave_numbers, phases, amplitudes, axis]))


def generate_case(seed: int, case_index: int, sizes: SizeOptions = SizeOptions()) -> tuple[Volume, Volume]:
    """One case: image (int16 HU) and label (uint8), from ``default_rng([seed, case_index])``."""
    rng = np.random.default_rng([seed, case_index])
    s = rng.uniform(0.88, 1.12)  # patient size
    body = _Body(
        a=165.0 * s * rng.uniform(0.95, 1.05),
        b=120.0 * s * rng.uniform(0.92, 1.08),
        fat=rng.uniform(8.0, 30.0) * s,
        wall=10.0 * s,
    )
    axes, affine = _scan_grid(rng, s, body, sizes)
    canvas = _Canvas(axes, _random_warp(rng, s), *_body_tissues(rng, axes, body))
    parts = _Anatomy(rng, s).parts()
    for part in parts:
        canvas.paint(part)
    canvas.keep_present(parts)
    image = _acquire(rng, canvas.hu, canvas.texture)
    return Volume(image, affine), Volume(canvas.label, affine.copy())


def _acquire(rng: np.random.Generator, hu: np.ndarray, texture: np.ndarray) -> np.ndarray:
    """Texture, partial-volume blur, smooth additive bias and noise, as int16 HU."""
    white = rng.standard_normal(hu.shape, dtype=np.float32)
    grain = ndimage.gaussian_filter(white, sigma=(1.0, 1.0, 0.6))
    image = hu + texture * grain / (grain.std() + 1e-6)
    image = ndimage.gaussian_filter(image, sigma=(0.6, 0.6, 0.4))
    u = [np.linspace(-1, 1, n, dtype=np.float32) for n in hu.shape]
    for _ in range(2):  # bias: separable products of slow cosines
        k, phase = rng.uniform(0.5, 1.5, 3), rng.uniform(0, 2 * np.pi, 3)
        x, y, z = (_along(np.cos(k[a] * np.pi * u[a] + phase[a]), a) for a in range(3))
        image += rng.uniform(4.0, 10.0) * x * y * z
    image += rng.uniform(8.0, 20.0) * rng.standard_normal(hu.shape, dtype=np.float32)
    return np.clip(np.rint(image), -1024, 3071).astype(np.int16)


def dataset_json(train_ids: list[str], validation_ids: list[str]) -> dict:
    """An AMOS-style ``dataset.json`` for the given case ids."""

    def entries(ids: list[str], tag: str) -> list[dict[str, str]]:
        return [{"image": f"./images{tag}/{i}.nii.gz", "label": f"./labels{tag}/{i}.nii.gz"} for i in ids]

    return {
        "name": "AMOS-synthetic",
        "description": "Synthetic abdominal CT phantom in AMOS 2022's layout (micd.data.synthetic)",
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
        raise SettingsError(f"expected n_train >= 1 and n_validation >= 0, got {n_train} and {n_validation}")
    if not (0 < inplane[0] <= inplane[1] and 0 < slices[0] <= slices[1]):
        raise SettingsError(f"expected size ranges (low, high) with 0 < low <= high, got {inplane} and {slices}")
    sizes = SizeOptions(tuple(inplane), tuple(slices))  # type: ignore[arg-type]
    ids = [f"amos_{k:04d}" for k in range(1, n_train + n_validation + 1)]
    with stage_output_dir(out_dir, "synthesise") as tmp:
        for name in ("imagesTr", "labelsTr", "imagesVa", "labelsVa"):
            (tmp / name).mkdir()
        for k, case_id in enumerate(ids, start=1):
            tag = "Tr" if k <= n_train else "Va"
            image, label = generate_case(seed, k, sizes)
            save_nifti(tmp / f"images{tag}" / f"{case_id}.nii.gz", image)
            save_nifti(tmp / f"labels{tag}" / f"{case_id}.nii.gz", label)
        meta = dataset_json(ids[:n_train], ids[n_train:])
        atomic_write(tmp / "dataset.json", json.dumps(meta, indent=4) + "\n")
