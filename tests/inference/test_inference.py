"""Tests of sliding-window inference, the written predictions and the run's metrics.csv."""

from __future__ import annotations

import csv
import itertools
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from micd import cli
from micd.data.classes import classes_for
from micd.data.convert import convert_archive
from micd.data.io import load_nifti
from micd.data.loaders import case_paths
from micd.data.predictions import from_volume, original_prediction_path, prediction_path
from micd.data.preprocess import grid_affine, preprocess, read_cases
from micd.data.synthetic import generate_archive
from micd.errors import SettingsError
from micd.evaluation.measures import METRICS_CSV_COLUMNS, dice_and_asd
from micd.evaluation.metrics import grid_spacing, score_run
from micd.inference.infer import InferenceSettings, predict_cases, write_predictions
from micd.inference.sliding_window import BLENDING_MODES, segment, sliding_window_probabilities
from micd.methods import build_method
from micd.nets.vnet import VNet

NUM_CLASSES = 3
PATCH = (16, 32, 32)
STRIDE = (8, 16, 16)
GRID = (16, 24, 24)  # the preprocessed grid: smaller than the patch in-plane


def voxelwise_logits(x: torch.Tensor) -> torch.Tensor:
    """Logits that depend on each voxel's intensity only, so every window agrees."""
    centres = torch.linspace(0, 1, NUM_CLASSES).view(1, NUM_CLASSES, 1, 1, 1)
    return -20 * (x - centres) ** 2


def position_logits(x: torch.Tensor) -> torch.Tensor:
    """Logits that depend on where a voxel lies in its window, so windows disagree."""
    d, h, w = x.shape[-3:]
    ramp = torch.linspace(-2, 2, d).view(d, 1, 1) + torch.linspace(0, 1, h).view(1, h, 1) * torch.ones(1, 1, w)
    logits = torch.stack([ramp * k for k in range(NUM_CLASSES)])
    return (logits[None] + x).expand(x.shape[0], -1, -1, -1, -1)


def window_starts(size: int, patch: int, stride: int) -> list[int]:
    """Window origins along one axis: every ``stride`` voxels, the last flush with the far face."""
    starts = list(range(0, size - patch + 1, stride))
    return starts if starts[-1] == size - patch else [*starts, size - patch]


def reference_average(predict, volume: torch.Tensor) -> torch.Tensor:
    """The protocol's blending written out plainly (one window at a time, DHC-style loops)."""
    total = torch.zeros(NUM_CLASSES, *volume.shape)
    count = torch.zeros(volume.shape)
    for origin in itertools.product(*(window_starts(n, p, s) for n, p, s in zip(volume.shape, PATCH, STRIDE))):
        box = tuple(slice(o, o + p) for o, p in zip(origin, PATCH))
        total[(slice(None), *box)] += predict(volume[box][None, None])[0].softmax(0)
        count[box] += 1
    return total / count


@pytest.mark.parametrize("shape", [(40, 72, 56), (21, 37, 45), (10, 20, 30)], ids=["divisible", "odd", "small"])
@pytest.mark.parametrize("blending", BLENDING_MODES)
def test_every_voxel_gets_a_full_probability_vector(shape: tuple[int, int, int], blending: str) -> None:
    volume = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    probabilities = sliding_window_probabilities(voxelwise_logits, volume, PATCH, STRIDE, 3, blending)
    assert probabilities.shape == (NUM_CLASSES, *shape)
    # every window agrees on every voxel, so any blending must give back that voxel's softmax
    expected = voxelwise_logits(volume[None, None])[0].softmax(0)
    torch.testing.assert_close(probabilities, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shape", [(40, 72, 56), (21, 37, 45)], ids=["divisible", "not-divisible-by-stride"])
def test_average_blending_is_the_mean_softmax_of_the_windows(shape: tuple[int, int, int]) -> None:
    volume = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    probabilities = sliding_window_probabilities(position_logits, volume, PATCH, STRIDE, 2, "average")
    torch.testing.assert_close(probabilities, reference_average(position_logits, volume), atol=1e-5, rtol=1e-5)


def test_blending_modes_differ_where_windows_disagree() -> None:
    volume = torch.rand((40, 72, 56), generator=torch.Generator().manual_seed(2))
    blended = {
        mode: sliding_window_probabilities(position_logits, volume, PATCH, STRIDE, 4, mode) for mode in BLENDING_MODES
    }
    for mode, probabilities in blended.items():
        torch.testing.assert_close(probabilities.sum(0), torch.ones(volume.shape), msg=mode)
    for a, b in itertools.combinations(BLENDING_MODES, 2):
        assert not torch.allclose(blended[a], blended[b], atol=1e-3), (a, b)


def test_a_volume_smaller_than_the_patch_is_padded_and_cropped_back() -> None:
    volume = torch.rand((10, 20, 30), generator=torch.Generator().manual_seed(3))
    seen = []

    def predict(x: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(x.shape))
        return voxelwise_logits(x)

    labels = segment(predict, volume, PATCH, STRIDE)
    assert seen == [(1, 1, *PATCH)]
    assert labels.shape == (10, 20, 30) and labels.dtype == torch.uint8
    assert torch.equal(labels, voxelwise_logits(volume[None, None])[0].argmax(0).to(torch.uint8))


@torch.no_grad()
def test_batched_windows_give_the_result_of_one_window_at_a_time() -> None:
    torch.manual_seed(0)
    net = VNet(NUM_CLASSES, n_filters=2).eval()
    volume = torch.rand((21, 45, 37))
    one = sliding_window_probabilities(net, volume, PATCH, STRIDE, batch_size=1)
    for batch_size in (3, 64):
        torch.testing.assert_close(sliding_window_probabilities(net, volume, PATCH, STRIDE, batch_size), one)


def test_windows_are_predicted_without_tf32_convolutions() -> None:
    seen = []

    def predict(x: torch.Tensor) -> torch.Tensor:
        seen.append(torch.backends.cudnn.allow_tf32)
        return voxelwise_logits(x)

    before = torch.backends.cudnn.allow_tf32
    segment(predict, torch.rand((20, 40, 40)), PATCH, STRIDE)
    assert seen and not any(seen)
    assert torch.backends.cudnn.allow_tf32 == before


@pytest.mark.parametrize("method", ["micd", "dhc", "cps"])
@torch.no_grad()
def test_two_branch_methods_predict_the_mean_of_both_branches_logits(method: str) -> None:
    # DHC's test code (utils.test_single_case_AB) takes the softmax of (net_A + net_B) / 2
    torch.manual_seed(0)
    model = build_method(method, {}, NUM_CLASSES, n_filters=2, dropout=0.0).eval()
    x = torch.rand(2, 1, *PATCH)
    a, b = model.student_a(x), model.student_b(x)
    assert not torch.allclose(a, b)
    torch.testing.assert_close(model.predict(x), (a + b) / 2)


def test_inference_settings_are_checked() -> None:
    volume = torch.rand(PATCH)
    with pytest.raises(SettingsError, match="blending"):
        sliding_window_probabilities(voxelwise_logits, volume, PATCH, STRIDE, blending="gaussian")
    with pytest.raises(SettingsError, match="batch size"):
        segment(voxelwise_logits, volume, PATCH, STRIDE, batch_size=0)
    with pytest.raises(SettingsError, match="stride"):
        segment(voxelwise_logits, volume, PATCH, (8, 15, 16))
    with pytest.raises(SettingsError, match="blending"):
        InferenceSettings(blending="max")


# ----- predictions on disk and metrics.csv ---------------------------------------------------


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny preprocessed folder made by micd itself from a synthetic AMOS-layout archive."""
    root = tmp_path_factory.mktemp("evaluation")
    generate_archive(root / "archive", 2, 1, seed=5, inplane=(40, 48), slices=(16, 20))
    manifest = convert_archive(root / "archive", root / "canonical")
    preprocess(manifest, root / "preprocessed", GRID, num_classes=len(classes_for("synthetic")))
    return root


def case_ids(dataset: Path) -> list[str]:
    return list(read_cases(dataset / "preprocessed"))


def true_labels(dataset: Path):
    def segment_volume(image: np.ndarray) -> np.ndarray:
        # the image is found by content: its label is the perfect prediction
        for case_id in case_ids(dataset):
            image_path, label_path = case_paths(dataset / "preprocessed", case_id)
            if np.array_equal(np.load(image_path), image):
                return np.load(label_path)
        raise AssertionError("unknown image")

    return segment_volume


def source_label(dataset: Path, case_id: str) -> nib.Nifti1Image:
    with open(dataset / "canonical" / "manifest.csv", newline="") as f:
        row = next(r for r in csv.DictReader(f) if r["case_id"] == case_id)
    return nib.load(dataset / "archive" / row["source_label"])


def test_predictions_are_written_on_the_preprocessed_and_the_source_grid(dataset: Path, tmp_path: Path) -> None:
    data_dir, out = dataset / "preprocessed", tmp_path / "predictions"
    write_predictions(true_labels(dataset), data_dir, case_ids(dataset), out)
    rows = read_cases(data_dir)
    for case_id in case_ids(dataset):
        on_grid = load_nifti(prediction_path(out, case_id))
        np.testing.assert_array_equal(from_volume(on_grid), np.load(case_paths(data_dir, case_id)[1]))
        np.testing.assert_allclose(on_grid.affine, grid_affine(rows[case_id]), atol=1e-5)
        assert not np.allclose(on_grid.affine, np.eye(4))

        source = source_label(dataset, case_id)
        original = load_nifti(original_prediction_path(out, case_id))
        assert original.data.shape == source.shape and original.data.dtype == np.uint8
        np.testing.assert_allclose(original.affine, source.affine, atol=1e-5)
        # down to the grid and back by nearest neighbour: the organs stay where they were, up to
        # the half-cell offset of DHC's floor-indexed nearest on this 2x coarser grid (the
        # centre-indexed nearest of mode spacing keeps over 85 here)
        truth = np.asarray(source.dataobj)
        assert set(np.unique(original.data)) <= set(np.unique(truth))
        assert dice_and_asd(original.data > 0, truth > 0)["dice"] > 78


def test_the_original_grid_copy_can_be_switched_off(dataset: Path, tmp_path: Path) -> None:
    write_predictions(true_labels(dataset), dataset / "preprocessed", case_ids(dataset), tmp_path / "p", False)
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == [".micd-output"] + [
        f"{c}.nii.gz" for c in case_ids(dataset)
    ]


def test_a_case_without_its_transform_gets_no_original_grid_copy(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data_dir = tmp_path / "preprocessed"
    data_dir.mkdir()
    for sub in ("images", "labels"):
        (data_dir / sub).symlink_to(dataset / "preprocessed" / sub)
    cases = pd.read_csv(dataset / "preprocessed" / "cases.csv", dtype=str, keep_default_na=False)
    first = cases["case_id"].iloc[0]
    cases.loc[0, "source_affine"] = ""
    cases.to_csv(data_dir / "cases.csv", index=False)
    write_predictions(true_labels(dataset), data_dir, case_ids(dataset), tmp_path / "p")
    assert not original_prediction_path(tmp_path / "p", first).exists()
    assert original_prediction_path(tmp_path / "p", case_ids(dataset)[1]).exists()
    assert first in capsys.readouterr().err


def save_model(path: Path, method: str) -> None:
    """A model.pt as the engine writes it, of an untrained network."""
    torch.manual_seed(0)
    model = build_method(method, {}, len(classes_for("synthetic")), n_filters=2, dropout=0.0)
    train_settings = {"n_filters": 2, "dropout": 0.0, "patch_size": list(PATCH), "window_stride": list(STRIDE)}
    torch.save(
        {
            "method_state": model.state_dict(),
            "method_settings": {},
            "train_settings": train_settings,
            "num_classes": len(classes_for("synthetic")),
            "provenance": {"method": method},
        },
        path,
    )


def test_predict_cases_segments_with_the_model_and_settings(dataset: Path, tmp_path: Path) -> None:
    save_model(tmp_path / "model.pt", "micd")
    ids = case_ids(dataset)
    settings = InferenceSettings(batch_size=4, blending="hann", original_grid=False)
    predict_cases(tmp_path / "model.pt", dataset / "preprocessed", ids, tmp_path / "p", settings, device="cpu")
    for case_id in ids:
        assert from_volume(load_nifti(prediction_path(tmp_path / "p", case_id))).shape == GRID
    assert not (tmp_path / "p" / "original").exists()


def test_metrics_csv_has_every_case_class_and_metric(dataset: Path, tmp_path: Path) -> None:
    data_dir, ids = dataset / "preprocessed", case_ids(dataset)
    write_predictions(true_labels(dataset), data_dir, ids, tmp_path / "p", original_grid=False)
    classes = classes_for("synthetic")
    run = {"dataset": "synthetic", "ratio": 5, "method": "micd", "seed": 0}
    table = score_run(tmp_path / "p", data_dir, ids, classes, run, tmp_path / "metrics.csv")
    written = pd.read_csv(tmp_path / "metrics.csv")
    assert list(written.columns) == list(METRICS_CSV_COLUMNS)
    assert len(written) == len(table) == len(ids) * (len(classes) - 1)
    # a perfect prediction: Dice 100 and distance 0 on present and absent classes alike
    assert (written["dice"] == 100).all() and (written[["asd_voxels", "asd_mm", "hd95_mm"]] == 0).all().all()
    literal = score_run(tmp_path / "p", data_dir, ids, classes, run, tmp_path / "m.csv", both_empty_dice=1.0)
    absent = [c.label for c in classes[1:] if not (np.load(case_paths(data_dir, ids[0])[1]) == c.label).any()]
    assert absent, "the synthetic case should miss a class"
    first = literal[(literal["case_id"] == ids[0]) & literal["class_id"].isin(absent)]
    assert (first["dice"] == 1.0).all()


def test_mm_metrics_use_the_grid_spacing(dataset: Path, tmp_path: Path) -> None:
    data_dir, ids = dataset / "preprocessed", case_ids(dataset)

    def shifted(image: np.ndarray) -> np.ndarray:
        return np.roll(true_labels(dataset)(image), 1, axis=0)  # one slice deeper

    write_predictions(shifted, data_dir, ids, tmp_path / "p", original_grid=False)
    run = {"dataset": "synthetic", "ratio": 5, "method": "micd", "seed": 0}
    table = score_run(tmp_path / "p", data_dir, ids, classes_for("synthetic"), run, tmp_path / "metrics.csv")
    row = table[(table["case_id"] == ids[0]) & (table["dice"] > 0)].iloc[0]
    prediction = from_volume(load_nifti(prediction_path(tmp_path / "p", ids[0]))) == row["class_id"]
    truth = np.load(case_paths(data_dir, ids[0])[1]) == row["class_id"]
    spacing = grid_spacing(read_cases(data_dir)[ids[0]])
    assert row["asd_mm"] == pytest.approx(dice_and_asd(prediction, truth, spacing)["asd_mm"])
    assert row["hd95_mm"] == pytest.approx(dice_and_asd(prediction, truth, spacing)["hd95_mm"])
    assert spacing[0] != spacing[1] and not math.isclose(row["asd_mm"], row["asd_voxels"])


def test_grid_spacing_is_read_in_d_h_w_order() -> None:
    assert grid_spacing({"case_id": "a", "grid_spacing": "2.5x0.75x0.8"}) == (2.5, 0.75, 0.8)
    for bad in ("", "1x2", "1xax2", "0x1x1"):
        with pytest.raises(ValueError, match="grid_spacing"):
            grid_spacing({"case_id": "a", "grid_spacing": bad})


def test_the_command_line_passes_the_evaluation_settings(dataset: Path, tmp_path: Path) -> None:
    data_dir, ids = dataset / "preprocessed", case_ids(dataset)
    save_model(tmp_path / "model.pt", "supervised")
    (tmp_path / "test.txt").write_text("".join(f"{c}\n" for c in ids))
    common = ["--data-dir", str(data_dir), "--cases", str(tmp_path / "test.txt")]
    model = ["--model", str(tmp_path / "model.pt"), *common, "--device", "cpu"]
    with pytest.raises(SystemExit, match="blending"):
        cli.main(["infer", *model, "--out", str(tmp_path / "bad"), "--blending", "max"])
    cli.main(["infer", *model, "--out", str(tmp_path / "p"), "--blending", "crop", "--no-original-grid"])
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == [".micd-output"] + [f"{c}.nii.gz" for c in ids]

    run = ["--family", "synthetic", "--dataset", "synthetic", "--ratio", "5", "--method", "supervised", "--seed", "0"]
    cli.main(["metrics", "--predictions", str(tmp_path / "p"), *common, *run, "--out", str(tmp_path / "m.csv")])
    cli.main(
        ["metrics", "--predictions", str(tmp_path / "p"), *common, *run, "--both-empty-dice", "1", "--empty-asd", "50"]
        + ["--out", str(tmp_path / "literal.csv")]
    )
    protocol, literal = pd.read_csv(tmp_path / "m.csv"), pd.read_csv(tmp_path / "literal.csv")
    assert list(protocol.columns) == list(METRICS_CSV_COLUMNS)
    assert set(literal["dice"][protocol["dice"] == 100]) <= {1.0, 100.0}
    assert set(literal["asd_voxels"][protocol["asd_voxels"] == 128]) == {50.0}
