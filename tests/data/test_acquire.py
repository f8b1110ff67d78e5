"""Getting the real data sets, with no network: archives in AMOS's and Synapse's exact layouts
(made from the synthetic generator) served by a real HTTP server on loopback."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from http_server import serve

from micd.data.acquire import download, extract_zip, fetch_files, fetch_synapse, zenodo_file
from micd.data.convert import convert_archive, read_manifest
from micd.data.io import Volume, load_nifti, save_nifti
from micd.data.preprocess import preprocess, read_cases, restore_original
from micd.data.synthetic import generate_archive
from micd.errors import DataError, SettingsError
from micd.methods import display_name

ROOT = Path(__file__).resolve().parents[2]

# dataset.json of AMOS 2022 spells some organs oddly; only the ids "0".."15" are checked.
AMOS_ODD_LABELS = {
    "0": "background", "1": "spleen", "2": "right kidney", "3": "left kidney", "4": "gall bladder",
    "5": "esophagus", "6": "liver", "7": "stomach", "8": "arota", "9": "postcava",
    "10": "pancreas", "11": "right adrenal gland", "12": "left adrenal gland", "13": "duodenum",
    "14": "bladder", "15": "prostate/uterus",
}  # fmt: skip


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _zip_folder(folder: Path, zip_path: Path, extra: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_STORED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(folder.parent).as_posix())
        for name, data in extra.items():
            zf.writestr(name, data)
    return zip_path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A web root with ``amos22.zip`` (AMOS layout), ``RawData.zip`` (Synapse layout) and a Zenodo record."""
    root = tmp_path_factory.mktemp("web")
    build = tmp_path_factory.mktemp("build")

    amos = build / "amos22"
    generate_archive(amos, 3, 2, seed=4, inplane=(40, 56), slices=(16, 20))  # in-plane sizes other than 512
    for folder in ("imagesVa", "labelsVa"):  # an MRI case: AMOS ids above 500
        (amos / folder / "amos_0005.nii.gz").rename(amos / folder / "amos_0540.nii.gz")
    meta = json.loads((amos / "dataset.json").read_text())
    (amos / "dataset.json").write_text(json.dumps(meta | {"labels": AMOS_ODD_LABELS}))
    junk = {"__MACOSX/amos22/._dataset.json": b"\x00\x05junk", "amos22/imagesTr/._amos_0001.nii.gz": b"junk"}
    _zip_folder(amos, root / "amos22.zip", junk)

    source = build / "synthetic"
    generate_archive(source, 3, 0, seed=6, inplane=(40, 48), slices=(16, 18))
    synapse = build / "RawData"
    for k in (1, 2, 3):
        for kind, folder in (("img", "imagesTr"), ("label", "labelsTr")):
            volume = load_nifti(source / folder / f"amos_{k:04d}.nii.gz")
            data = (
                np.where(volume.data > 13, 0, volume.data).astype(volume.data.dtype) if kind == "label" else volume.data
            )
            save_nifti(synapse / "Training" / kind / f"{kind}{k:04d}.nii.gz", Volume(data, volume.affine))
    shutil.copy(source / "imagesTr" / "amos_0001.nii.gz", build / "img0061.nii.gz")
    (synapse / "Testing" / "img").mkdir(parents=True)  # unlabelled test images are not used
    shutil.copy(build / "img0061.nii.gz", synapse / "Testing" / "img" / "img0061.nii.gz")
    _zip_folder(synapse, root / "RawData.zip", {})

    record = root / "api" / "records" / "7262581"
    record.parent.mkdir(parents=True)
    record.write_text(
        json.dumps(
            {
                "files": [
                    {
                        "key": "amos22.zip",
                        "checksum": f"md5:{_md5(root / 'amos22.zip')}",
                        "links": {"self": "PLACEHOLDER/amos22.zip"},
                    }
                ]
            }
        )
    )
    return root


@pytest.fixture
def server(served: Path):
    with serve(served) as (url, state):
        record = served / "api" / "records" / "7262581"
        record.write_text(record.read_text().replace("PLACEHOLDER", url))
        yield url, state
        record.write_text(record.read_text().replace(url, "PLACEHOLDER"))


def test_download_resumes_after_a_dropped_connection(served: Path, server, tmp_path: Path) -> None:
    url, state = server
    state.drop_first.add("amos22.zip")
    dest = download(f"{url}/amos22.zip", tmp_path / "amos22.zip", ("md5", _md5(served / "amos22.zip")), backoff=0)
    assert dest.read_bytes() == (served / "amos22.zip").read_bytes()
    size = (served / "amos22.zip").stat().st_size
    assert state.requests == [("amos22.zip", None), ("amos22.zip", f"bytes={size // 2}-")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["amos22.zip"]


def test_checksum_mismatch_removes_the_partial_file(server, tmp_path: Path) -> None:
    url, _ = server
    with pytest.raises(DataError, match=r"amos22\.zip\.part: expected md5 0{32}, found [0-9a-f]{32}"):
        download(f"{url}/amos22.zip", tmp_path / "amos22.zip", ("md5", "0" * 32))
    assert list(tmp_path.iterdir()) == []


def test_zenodo_record_gives_address_and_md5(served: Path, server) -> None:
    url, _ = server
    address, md5 = zenodo_file(f"{url}/api/records/7262581", "amos22.zip")
    assert (address, md5) == (f"{url}/amos22.zip", _md5(served / "amos22.zip"))
    with pytest.raises(DataError, match="has no file 'amos.zip'; it lists \\['amos22.zip'\\]"):
        zenodo_file(f"{url}/api/records/7262581", "amos.zip")


def _micd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "micd.cli", *args], capture_output=True, text=True, env=env)


def test_fetch_zenodo_needs_the_licence_accepted(served: Path, server, tmp_path: Path) -> None:
    url, _ = server
    args = ["fetch-zenodo", "--api-url", f"{url}/api/records/7262581", "--file", "amos22.zip"]
    args += ["--out", str(tmp_path / "archive.zip"), "--dataset", "amos", "--licence", "CC BY 4.0"]
    refused = _micd(*args)
    assert refused.returncode == 1
    assert "amos is distributed under CC BY 4.0" in refused.stderr
    assert "datasets.amos.licence_accepted: true" in refused.stderr
    assert not (tmp_path / "archive.zip").exists()
    done = _micd(*args, "--licence-accepted")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "archive.zip").read_bytes() == (served / "amos22.zip").read_bytes()


def test_extract_skips_macos_junk_and_converts_the_amos_layout(served: Path, tmp_path: Path) -> None:
    extract_zip(served / "amos22.zip", tmp_path / "raw")
    assert sorted(p.name for p in tmp_path.joinpath("raw").iterdir()) == [".micd-output", "amos22"]
    assert not list(tmp_path.joinpath("raw").rglob("._*"))
    rows = read_manifest(convert_archive(tmp_path / "raw", tmp_path / "converted", layout="amos"))
    assert [(r["case_id"], r["subset"], r["modality"]) for r in rows] == [
        ("amos_0001", "train", "ct"),
        ("amos_0002", "train", "ct"),
        ("amos_0003", "train", "ct"),
        ("amos_0004", "validation", "ct"),
        ("amos_0540", "validation", "mri"),
    ]
    assert {r["shape"].split("x")[0] for r in rows} != {"512"}
    for row in rows:
        assert (
            row["image_sha256"]
            == hashlib.sha256((tmp_path / "raw" / "amos22" / row["source_image"]).read_bytes()).hexdigest()
        )
        assert len(row["source_affine"].split()) == 16
    ct_only = read_manifest(convert_archive(tmp_path / "raw", tmp_path / "ct", modality="ct"))
    assert "amos_0540" not in [r["case_id"] for r in ct_only]


def _zip_with(tmp_path: Path, name: str) -> Path:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("amos22/dataset.json", "{}")
        zf.writestr(name, "escaped")
    return archive


@pytest.mark.parametrize("name", ["../outside.txt", "amos22/../../outside.txt", "/etc/outside.txt"])
def test_extract_refuses_entries_outside_the_target(tmp_path: Path, name: str) -> None:
    archive = _zip_with(tmp_path, name)
    with pytest.raises(DataError, match="evil.zip: refusing entry .*outside the target folder"):
        extract_zip(archive, tmp_path / "raw")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.zip"]


def test_truncated_archive_is_named_and_leaves_nothing(served: Path, tmp_path: Path) -> None:
    data = (served / "RawData.zip").read_bytes()
    truncated = tmp_path / "RawData.zip"
    truncated.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(DataError, match="RawData.zip: expected a complete zip archive; it is truncated"):
        extract_zip(truncated, tmp_path / "raw")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["RawData.zip"]


def test_synapse_placed_archive_is_verified_and_converted(served: Path, tmp_path: Path) -> None:
    placed = served / "RawData.zip"
    fetch_synapse(tmp_path / "archive.zip", "syn3379050", _md5(placed), placed=placed)
    extract_zip(tmp_path / "archive.zip", tmp_path / "raw")
    rows = read_manifest(convert_archive(tmp_path / "raw", tmp_path / "converted", layout="synapse"))
    assert [(r["case_id"], r["subset"], r["source_image"]) for r in rows] == [
        (f"000{k}", "train", f"Training/img/img000{k}.nii.gz") for k in (1, 2, 3)
    ]
    with pytest.raises(DataError, match=f"file {placed}: expected md5 f{{32}}"):
        fetch_synapse(tmp_path / "again.zip", "syn3379050", "f" * 32, placed=placed)
    assert not (tmp_path / "again.zip").exists()


def test_synapse_without_a_placed_file_or_token_says_what_to_do(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("SYNAPSE_AUTH_TOKEN", raising=False)
    with pytest.raises(SettingsError, match="place RawData.zip at .*missing.zip, or set the environment variable"):
        fetch_synapse(tmp_path / "archive.zip", "syn3379050", "0" * 32, placed=tmp_path / "missing.zip")


def test_synapse_label_outside_its_thirteen_organs_is_named(served: Path, tmp_path: Path) -> None:
    extract_zip(served / "RawData.zip", tmp_path / "raw")
    path = tmp_path / "raw" / "RawData" / "Training" / "label" / "label0002.nii.gz"
    volume = load_nifti(path)
    data = volume.data.copy()
    data[0, 0, 0] = 14
    save_nifti(path, Volume(data, volume.affine))
    with pytest.raises(DataError, match=r"case 0002, file .*label0002.nii.gz: expected integer label values in 0..13"):
        convert_archive(tmp_path / "raw", tmp_path / "converted", layout="synapse")
    assert not (tmp_path / "converted").exists()


def test_every_preprocessing_mode_and_the_way_back(served: Path, tmp_path: Path) -> None:
    extract_zip(served / "amos22.zip", tmp_path / "raw")
    manifest = convert_archive(tmp_path / "raw", tmp_path / "converted")
    preprocess(manifest, tmp_path / "grid", grid=(16, 24, 24), mode="grid")
    preprocess(manifest, tmp_path / "half_inplane", mode="half_inplane")
    preprocess(manifest, tmp_path / "spacing", spacing=(20.0, 10.0, 10.0), mode="spacing")
    for mode in ("grid", "half_inplane", "spacing"):
        cases = read_cases(tmp_path / mode)
        for case_id, row in cases.items():
            image = np.load(tmp_path / mode / "images" / f"{case_id}.npy")
            label = np.load(tmp_path / mode / "labels" / f"{case_id}.npy")
            assert row["mode"] == mode and image.shape == label.shape
            assert 0.0 <= image.min() and image.max() <= 1.0
            shape = [int(n) for n in row["original_shape"].split("x")]
            if mode == "grid":
                assert image.shape == (16, 24, 24)
            elif mode == "half_inplane":
                assert image.shape == (shape[0], shape[1] // 2, shape[2] // 2)
            else:  # shape = original extent / target spacing
                spacing = [float(s) for s in row["original_spacing"].split("x")]
                expected = tuple(round(n * s / t) for n, s, t in zip(shape, spacing, (20.0, 10.0, 10.0)))
                assert image.shape == expected
            restored = restore_original(label, row)
            subset = "Tr" if row["subset"] == "train" else "Va"
            source = load_nifti(tmp_path / "raw" / "amos22" / f"labels{subset}" / f"{case_id}.nii.gz")
            assert restored.data.shape == source.data.shape
            np.testing.assert_allclose(restored.affine, source.affine)
            assert (restored.data == source.data).mean() > 0.85  # coarse grid, nearest neighbour both ways


def _dhc_interpolate(volume: np.ndarray, size: tuple[int, ...], mode: str) -> np.ndarray:
    """``F.interpolate`` of a (D, H, W) array as DHC's scripts call it."""
    import torch
    import torch.nn.functional as F

    tensor = torch.FloatTensor(volume.astype(np.float32)).unsqueeze(0).unsqueeze(0)
    options = {"align_corners": False} if mode == "trilinear" else {}
    return F.interpolate(tensor, size=size, mode=mode, **options).squeeze().numpy()


def _dhc_window(image: np.ndarray) -> np.ndarray:
    """DHC's loader: clip to [-75, 275], then min-max over the volume."""
    image = image.clip(min=-75, max=275)
    return (image - image.min()) / (image.max() - image.min())


def _canonical_zyx(converted: Path, case_id: str) -> tuple[np.ndarray, np.ndarray]:
    """A converted case as DHC's SimpleITK reads it: (z, y, x) arrays."""
    image = load_nifti(converted / "images" / f"{case_id}.nii.gz").data.transpose(2, 1, 0)
    label = load_nifti(converted / "labels" / f"{case_id}.nii.gz").data.transpose(2, 1, 0)
    return image, label


def test_synapse_gets_dhcs_grid_slices_kept_and_half_the_inplane_size(served: Path, tmp_path: Path) -> None:
    """DHC's Synapse: its loader windows the full-size volume, RandomCrop/CenterCrop and its test
    code then resize to (D, H // 2, W // 2), trilinear for the image and nearest for the label."""
    extract_zip(served / "RawData.zip", tmp_path / "raw")
    manifest = convert_archive(tmp_path / "raw", tmp_path / "converted", layout="synapse")
    preprocess(manifest, tmp_path / "pre", mode="half_inplane", num_classes=14)
    for case_id, row in read_cases(tmp_path / "pre").items():
        image, label = _canonical_zyx(tmp_path / "converted", case_id)
        d, h, w = image.shape
        expected_image = _dhc_interpolate(_dhc_window(image.astype(np.float32)), (d, h // 2, w // 2), "trilinear")
        expected_label = _dhc_interpolate(label, (d, h // 2, w // 2), "nearest")
        ours_image = np.load(tmp_path / "pre" / "images" / f"{case_id}.npy")
        ours_label = np.load(tmp_path / "pre" / "labels" / f"{case_id}.npy")
        assert ours_image.shape == (d, h // 2, w // 2) and row["grid"] == f"{d}x{h // 2}x{w // 2}"
        np.testing.assert_allclose(ours_image, expected_image, atol=1e-6)
        np.testing.assert_array_equal(ours_label, expected_label)

    # a model predicts on that grid, and the metrics score it there against the halved labels
    import torch

    from micd.data.classes import classes_for
    from micd.data.predictions import from_volume, prediction_path
    from micd.evaluation.metrics import score_run
    from micd.inference.infer import predict_cases
    from micd.methods import build_method

    torch.manual_seed(0)
    classes = classes_for("synapse")
    model = build_method("dhc", {}, len(classes), n_filters=2, dropout=0.0)
    torch.save(
        {
            "method_state": model.state_dict(),
            "method_settings": {},
            "train_settings": {"n_filters": 2, "dropout": 0.0, "patch_size": [16, 16, 16], "window_stride": [8, 8, 8]},
            "num_classes": len(classes),
            "provenance": {"method": "dhc"},
        },
        tmp_path / "model.pt",
    )
    ids = sorted(read_cases(tmp_path / "pre"))
    predict_cases(tmp_path / "model.pt", tmp_path / "pre", ids, tmp_path / "predictions", device="cpu")
    run = {"dataset": "synapse", "ratio": 10, "method": "dhc", "seed": 0}
    table = score_run(tmp_path / "predictions", tmp_path / "pre", ids, classes, run, tmp_path / "metrics.csv")
    assert len(table) == len(ids) * 13
    for case_id, row in read_cases(tmp_path / "pre").items():
        predicted = from_volume(load_nifti(prediction_path(tmp_path / "predictions", case_id)))
        assert "x".join(map(str, predicted.shape)) == row["grid"]


def test_amos_grid_is_dhcs_resized_raw_volume_then_windowed(served: Path, tmp_path: Path) -> None:
    """DHC's preprocess_amos.py resizes the raw HU volume (trilinear) and the label (nearest);
    its loader then clips and min-max scales the resized volume."""
    extract_zip(served / "amos22.zip", tmp_path / "raw")
    manifest = convert_archive(tmp_path / "raw", tmp_path / "converted")
    grid = (20, 40, 40)
    preprocess(manifest, tmp_path / "pre", grid=grid, mode="grid")
    for case_id in read_cases(tmp_path / "pre"):
        image, label = _canonical_zyx(tmp_path / "converted", case_id)
        expected_image = _dhc_window(_dhc_interpolate(image, grid, "trilinear"))
        np.testing.assert_allclose(np.load(tmp_path / "pre" / "images" / f"{case_id}.npy"), expected_image, atol=1e-6)
        expected_label = _dhc_interpolate(label, grid, "nearest")
        np.testing.assert_array_equal(np.load(tmp_path / "pre" / "labels" / f"{case_id}.npy"), expected_label)


def test_fetch_published_splits_checks_each_file(tmp_path: Path) -> None:
    splits = Path(__file__).resolve().parents[1] / "fixtures" / "dhc_splits" / "synapse"
    digests = {name: hashlib.sha256((splits / name).read_bytes()).hexdigest() for name in ("train.txt", "test.txt")}
    with serve(splits) as (url, _):
        fetch_files(url, digests, tmp_path / "published")
        written = sorted(p.name for p in (tmp_path / "published").iterdir())
        assert written == [".micd-output", "sources.csv", "test.txt", "train.txt"]
        assert f"{url}/train.txt,{digests['train.txt']}" in (tmp_path / "published" / "sources.csv").read_text()
        with pytest.raises(DataError, match="eval.txt.part: expected sha256 1{64}"):
            fetch_files(url, {"eval.txt": "1" * 64}, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def _snakemake(workdir: Path, config: dict, *args: str) -> subprocess.CompletedProcess:
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir)]
    command += ["--cores", "2", *args, "--configfile", str(workdir / "config.yaml")]
    return subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.workflow
def test_workflow_gets_both_data_sets_to_splits(served: Path, tmp_path: Path) -> None:
    """AMOS from the Zenodo record and DHC-style split files, Synapse from a placed RawData.zip."""
    splits = served / "amos_splits"
    splits.mkdir(exist_ok=True)
    lists = {"train.txt": "amos_0001\namos_0002\n", "eval.txt": "amos_0003\n", "test.txt": "amos_0004\namos_0540\n"}
    lists |= {"labeled_50p.txt": "amos_0002\n", "unlabeled_50p.txt": "amos_0001\n"}
    for name, text in lists.items():
        (splits / name).write_text(text)
    with serve(served) as (url, state):
        state.drop_first.add("amos22.zip")
        record = json.loads((served / "api" / "records" / "7262581").read_text().replace("PLACEHOLDER", url))
        (served / "api" / "records" / "record_for_workflow").write_text(json.dumps(record))
        config = {
            "datasets": {
                "amos_local": {
                    "source": "zenodo",
                    "family": "amos",
                    "licence": "CC BY 4.0",
                    "licence_accepted": True,
                    "zenodo": {"api_url": f"{url}/api/records/record_for_workflow", "file": "amos22.zip", "retries": 2},
                    "published_splits": {
                        "base_url": f"{url}/amos_splits",
                        "sha256": {name: hashlib.sha256(text.encode()).hexdigest() for name, text in lists.items()},
                    },
                },
                "synapse_local": {
                    "source": "synapse",
                    "family": "synapse",
                    "synapse": {
                        "entity": "syn3379050",
                        "md5": _md5(served / "RawData.zip"),
                        "placed": str(served / "RawData.zip"),
                    },
                },
            },
            "run_datasets": ["amos_local", "synapse_local"],
            "ratios": [50],
            "preprocess": {"mode": "spacing", "spacing": [20.0, 10.0, 10.0]},
            "split": {"eval_fraction": 0.34, "test_fraction": 0.34},
        }
        targets = [f"results/{name}/splits/origin.csv" for name in ("amos_local", "synapse_local")]
        result = _snakemake(tmp_path, config, *targets)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    results = tmp_path / "results"
    assert ("amos22.zip", f"bytes={(served / 'amos22.zip').stat().st_size // 2}-") in state.requests
    amos_origin = (results / "amos_local" / "splits" / "origin.csv").read_text()
    assert 'labelled_50p.txt,"published, ' in amos_origin and "generated" not in amos_origin
    assert (results / "amos_local" / "splits" / "test.txt").read_text() == "amos_0004\namos_0540\n"
    synapse_origin = (results / "synapse_local" / "splits" / "origin.csv").read_text()
    assert synapse_origin.count("generated, seed 0") == 5
    cases = read_cases(results / "synapse_local" / "preprocessed")
    assert sorted(cases) == ["0001", "0002", "0003"] and {row["mode"] for row in cases.values()} == {"spacing"}


@pytest.mark.workflow
def test_paper_config_plans_the_whole_grid_with_no_data(tmp_path: Path) -> None:
    config = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    result = _snakemake(tmp_path, config, "-n")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout + result.stderr
    n_runs = len(config["run_datasets"]) * len(config["ratios"]) * len(config["methods"]) * len(config["seeds"])
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", out[out.index("Job stats:") :], flags=re.M))
    assert int(counts["infer"]) == int(counts["metrics"]) == n_runs == 228
    # the upper bound trains once per data set and seed, at 5 %, and is copied to 10 %
    shared = len(config["run_datasets"]) * len(config["seeds"])
    assert int(counts["train"]) == n_runs - shared and int(counts["share_every_case_run"]) == shared
    # every row DHC published for AMOS and Synapse is one of ours, matched by the paper's name
    published = pd.read_csv(ROOT / "config" / "published" / "dhc_tables.csv")
    ours = {display_name(m) for m in config["methods"]}
    assert set(published["method"]) <= ours, set(published["method"]) - ours
    assert sorted(config["ratios"]) == [5, 10]
    for rule in ("fetch_zenodo", "fetch_synapse"):
        assert counts[rule] == "1"
    assert counts["fetch_published_splits"] == counts["extract"] == counts["split"] == "2"
