"""Output folders a stage must not replace (issue 35 items 2 and 7): a stage replaces its ``--out``
whole, so it refuses a folder it did not write and one that is, holds or lies inside its input,
replaces only its own earlier output, and removes only its own leftover temporaries."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
from bad_nifti import micd_error

from micd.atomic import OUTPUT_MARKER, stage_output_dir, written_by
from micd.cli import main
from micd.data.synthetic import generate_archive

SYNTHESISE = (
    "--n-train",
    "2",
    "--n-validation",
    "0",
    "--seed",
    "0",
    "--options",
    '{"inplane": [40, 40], "slices": [16, 16]}',
)


def synthesise(out: Path, *extra: str) -> None:
    main(["synthesise", "--out", str(out), *SYNTHESISE, *extra])


@pytest.fixture
def user_folder(tmp_path: Path) -> Path:
    """A folder of a user's own files, which no stage may delete."""
    folder = tmp_path / "mydocs"
    (folder / "thesis").mkdir(parents=True)
    (folder / "thesis" / "chapter1.tex").write_text("\\chapter{Introduction}")
    (folder / "notes.txt").write_text("mine")
    return folder


def refused(tmp_path: Path, snapshot, assert_unchanged, *command: object) -> str:
    """The one-line error of ``micd *command``, having changed nothing under tmp_path."""
    before = snapshot(tmp_path)
    message = micd_error(*command)
    assert_unchanged(tmp_path, before)  # no output, no temporary left
    return message


def test_extract_into_the_folder_holding_its_archive_is_refused(tmp_path, snapshot, assert_unchanged) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with zipfile.ZipFile(data / "RawData.zip", "w") as zf:
        zf.writestr("Training/img/img0001.nii.gz", b"scan")
    message = refused(tmp_path, snapshot, assert_unchanged, "extract", "--archive", data / "RawData.zip", "--out", data)
    assert message == (
        f"micd extract: error: file {data}: the output folder holds the input {data / 'RawData.zip'}, and micd "
        "extract replaces its output folder whole: choose another folder"
    )


def test_extract_into_a_link_to_the_folder_holding_its_archive_is_refused(tmp_path, snapshot, assert_unchanged) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with zipfile.ZipFile(data / "RawData.zip", "w") as zf:
        zf.writestr("a.txt", b"a")
    (tmp_path / "link").symlink_to(data)
    message = refused(
        tmp_path, snapshot, assert_unchanged, "extract", "--archive", data / "RawData.zip", "--out", tmp_path / "link"
    )
    assert "the output folder holds the input" in message


def test_infer_into_a_folder_of_the_users_files_is_refused(tmp_path, user_folder, snapshot, assert_unchanged) -> None:
    cases = tmp_path / "test.txt"
    cases.write_text("amos_0001\n")
    (tmp_path / "model.pt").write_bytes(b"never read: the output folder is checked first")
    message = refused(
        tmp_path, snapshot, assert_unchanged,
        "infer", "--model", tmp_path / "model.pt", "--data-dir", tmp_path / "data", "--cases", cases,
        "--out", user_folder,
    )  # fmt: skip
    assert message == (
        f"micd infer: error: file {user_folder}: the output folder is not empty and not an earlier micd infer "
        f"output (it has no {OUTPUT_MARKER} naming micd infer); micd replaces its output folder whole and never "
        "deletes what it did not write: choose a new or empty folder"
    )


def test_synthesise_into_a_folder_of_the_users_files_is_refused(
    tmp_path, user_folder, snapshot, assert_unchanged
) -> None:
    message = refused(tmp_path, snapshot, assert_unchanged, "synthesise", "--out", user_folder, *SYNTHESISE)
    assert f"file {user_folder}: the output folder is not empty and not an earlier micd synthesise output" in message


def test_fetch_splits_into_a_folder_of_the_users_files_is_refused_before_any_download(
    tmp_path, user_folder, snapshot, assert_unchanged
) -> None:
    message = refused(
        tmp_path, snapshot, assert_unchanged,
        "fetch-splits", "--base-url", "http://127.0.0.1:9/unreachable", "--sha256", '{"train.txt": "00"}',
        "--out", user_folder, "--retries", "0",
    )  # fmt: skip
    assert "not an earlier micd fetch-splits output" in message


def test_convert_into_its_own_archive_folder_is_refused(tmp_path, snapshot, assert_unchanged) -> None:
    raw = tmp_path / "raw"
    generate_archive(raw, 2, 0, seed=0, inplane=(24, 24), slices=(8, 8))
    message = refused(tmp_path, snapshot, assert_unchanged, "convert", "--archive", raw, "--out", raw / "canonical")
    assert f"file {raw / 'canonical'}: the output folder lies inside the input folder {raw}" in message
    message = refused(tmp_path, snapshot, assert_unchanged, "convert", "--archive", raw, "--out", raw)
    assert f"file {raw}: the output folder is the input {raw}" in message


def test_convert_into_a_folder_another_stage_wrote_is_refused(tmp_path, snapshot, assert_unchanged) -> None:
    raw, other = tmp_path / "raw", tmp_path / "other"
    synthesise(raw)
    synthesise(other)
    message = refused(tmp_path, snapshot, assert_unchanged, "convert", "--archive", raw, "--out", other)
    assert f"file {other}: the output folder is not empty and not an earlier micd convert output" in message
    assert "(it was written by micd synthesise)" in message


def test_preprocess_into_the_converted_folder_it_reads_is_refused(tmp_path, snapshot, assert_unchanged) -> None:
    raw, converted = tmp_path / "raw", tmp_path / "converted"
    synthesise(raw)
    main(["convert", "--archive", str(raw), "--out", str(converted)])
    message = refused(
        tmp_path, snapshot, assert_unchanged,
        "preprocess", "--manifest", converted / "manifest.csv", "--out", converted, "--family", "synthetic",
        "--grid", "8", "16", "16", "--hu-window", "-75", "275",
    )  # fmt: skip
    assert f"file {converted}: the output folder is the input {converted}" in message


def test_an_out_that_is_a_file_is_refused(tmp_path, snapshot, assert_unchanged) -> None:
    (tmp_path / "raw").write_text("a file of the user's")
    message = refused(tmp_path, snapshot, assert_unchanged, "synthesise", "--out", tmp_path / "raw", *SYNTHESISE)
    assert message.endswith(
        f"file {tmp_path / 'raw'}: expected a folder for the output of micd synthesise, found a file"
    )


def test_a_stage_replaces_its_own_earlier_output_and_an_empty_folder(tmp_path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    synthesise(raw)  # an empty folder is taken
    assert written_by(raw) == "synthesise"
    first = (raw / "imagesTr" / "amos_0001.nii.gz").read_bytes()
    main(["synthesise", "--out", str(raw), "--n-train", "3", "--n-validation", "0", "--seed", "1"])
    assert sorted(p.name for p in (raw / "imagesTr").iterdir()) == [f"amos_000{k}.nii.gz" for k in (1, 2, 3)]
    assert (raw / "imagesTr" / "amos_0001.nii.gz").read_bytes() != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]  # nothing left beside it


def test_a_stage_that_fails_leaves_its_earlier_output_and_no_temporary(tmp_path, snapshot, assert_unchanged) -> None:
    raw = tmp_path / "raw"
    synthesise(raw)
    before = snapshot(tmp_path)
    with pytest.raises(RuntimeError, match="interrupted"):
        with stage_output_dir(raw, "synthesise") as tmp:
            (tmp / "half.txt").write_text("half written")
            raise RuntimeError("interrupted")
    assert_unchanged(tmp_path, before)


# ----- leftovers of a killed stage ---------------------------------------------------------


def killed_inside_stage(out: Path, stage: str) -> None:
    """A real process that starts writing ``out`` as ``stage`` and is killed (SIGKILL) mid-way."""
    code = textwrap.dedent(
        f"""
        import os, signal
        from micd.atomic import stage_output_dir
        with stage_output_dir({str(out)!r}, {stage!r}) as tmp:
            (tmp / "images").mkdir()
            (tmp / "images" / "half.npy").write_bytes(b"0" * 1000)
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], check=False)
    assert result.returncode == -signal.SIGKILL


def test_the_next_run_removes_a_killed_stages_temporary_folder(tmp_path, capsys) -> None:
    killed_inside_stage(tmp_path / "raw", "synthesise")
    leftovers = list(tmp_path.glob(".raw.tmp-*"))
    assert len(leftovers) == 1 and (leftovers[0] / "images" / "half.npy").is_file()
    synthesise(tmp_path / "raw")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]
    assert f"removed {leftovers[0]}, left by an interrupted earlier run" in capsys.readouterr().out


def test_a_killed_preprocess_leaves_no_hidden_folder_after_the_next_run(tmp_path) -> None:
    raw, converted, preprocessed = tmp_path / "raw", tmp_path / "converted", tmp_path / "pre"
    synthesise(raw)
    main(["convert", "--archive", str(raw), "--out", str(converted)])
    killed_inside_stage(preprocessed, "preprocess")
    assert len(list(tmp_path.glob(".pre.tmp-*"))) == 1
    main(
        ["preprocess", "--manifest", str(converted / "manifest.csv"), "--out", str(preprocessed)]
        + ["--family", "synthetic", "--grid", "8", "16", "16", "--hu-window", "-75", "275"]
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["converted", "pre", "raw"]
    assert written_by(preprocessed) == "preprocess"


def test_only_the_stages_own_dead_temporaries_are_removed(tmp_path) -> None:
    """An older micd's name (no writer) and a dead writer's go; a live writer's, another output's
    and a user's file of a similar name stay."""
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(finished.stdout)
    host = socket.gethostname()
    removed = [".raw.tmp-k3j_x9a1", f".raw.tmp-{host}-{dead_pid}-abc123", f".raw.old-{host}-{dead_pid}-0f0f"]
    kept = [f".raw.tmp-{host}-{os.getpid()}-live1234", ".pre.tmp-k3j_x9a1", ".raw.tmp-notes.txt", "raw.tmp-abc"]
    for name in removed + kept:
        (tmp_path / name).mkdir()
        (tmp_path / name / "content").write_text("x")
    synthesise(tmp_path / "raw")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept + ["raw"])


# ----- Snakemake's own outputs -------------------------------------------------------------


SNAKEFILE = """
rule synthesise:
    output:
        directory("results/raw"),
    params:
        options='{"inplane": [40, 40], "slices": [16, 16]}',
    shell:
        "MICD synthesise --out {output} --n-train 2 --n-validation 0 --seed 0 --options {params.options:q}"
"""


@pytest.mark.workflow
def test_snakemake_reruns_and_forced_reruns_of_a_stage_work(tmp_path) -> None:
    """Snakemake removes a job's outputs before running it; a forced rerun and a rerun after the
    output was removed still work."""
    (tmp_path / "Snakefile").write_text(SNAKEFILE.replace("MICD", f"{sys.executable} -m micd.cli"))
    command = [sys.executable, "-m", "snakemake", "--cores", "1", "--directory", str(tmp_path)]
    command += ["--snakefile", str(tmp_path / "Snakefile")]
    raw = tmp_path / "results" / "raw"
    for extra in ([], ["--forcerun", "synthesise"]):
        result = subprocess.run([*command, *extra], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert "Finished job" in result.stderr or "steps (100%) done" in result.stderr
        assert written_by(raw) == "synthesise" and (raw / "dataset.json").is_file()
    result = subprocess.run([*command, "--forcerun", "synthesise", "--dry-run"], capture_output=True, text=True)
    assert result.returncode == 0 and "synthesise" in result.stdout + result.stderr
