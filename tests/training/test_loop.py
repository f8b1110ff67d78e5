"""The training engine: exact resume, SIGTERM checkpoints, outputs."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from training_helpers import NUM_CLASSES, StopAt, final_state, tiny_data, tiny_settings, write_tiny_cases

from micd.data.loaders import data_fingerprint
from micd.errors import RunInUseError
from micd.model_file import read_model
from micd.settings import TrainSettings
from micd.training.loop import Trainer, autocast_dtype, poly_lr


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """Six tiny preprocessed cases: a bright box of each class in a noisy volume."""
    return write_tiny_cases(tmp_path_factory.mktemp("preprocessed"))


def train_command(
    data_dir: Path,
    out: Path,
    lists: dict[str, Path],
    method: str,
    method_settings: str = "{}",
    train_settings: str = "{}",
) -> list[str]:
    """``micd train`` on the tiny cases, with the case lists given by split name."""
    return [
        sys.executable, "-m", "micd.cli", "train", "--data-dir", str(data_dir), "--out-dir", str(out),
        "--method", method, "--method-settings", method_settings, "--train-settings", train_settings,
        "--family", "synthetic", "--dataset", "tiny", "--ratio", "5", "--seed", "0",
        *[arg for name, path in lists.items() for arg in (f"--{name}", str(path))],
    ]  # fmt: skip


@pytest.mark.parametrize("method", ["micd", "supervised"])
def test_kill_and_resume_gives_the_same_weights_as_a_straight_run(data_dir, tmp_path, method):
    settings = tiny_settings()
    method_settings = {"mask_block": 8} if method == "micd" else {}
    straight = Trainer(method, method_settings, settings, tiny_data(data_dir), tmp_path / "straight", seed=1)
    assert straight.fit()
    interrupted = StopAt(method, method_settings, settings, tiny_data(data_dir), tmp_path / "resumed", seed=1)
    assert not interrupted.fit()  # stopped mid-epoch (epoch 1, first of its two iterations)
    assert not (tmp_path / "resumed" / "model.pt").exists()
    resumed = Trainer(method, method_settings, settings, tiny_data(data_dir), tmp_path / "resumed", seed=1)
    assert resumed.fit()
    a, b = final_state(tmp_path / "straight"), final_state(tmp_path / "resumed")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    log_a = (tmp_path / "straight" / "train_log.jsonl").read_text().splitlines()
    log_b = (tmp_path / "resumed" / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(x)["iteration"] for x in log_b] == list(range(1, 9))  # epochs 0..3, as DHC's loop
    strip = lambda rows: [{k: v for k, v in json.loads(r).items() if not k.endswith("_s")} for r in rows]  # noqa: E731
    assert strip(log_a) == strip(log_b)
    assert (tmp_path / "resumed" / "validation.csv").read_text() == (
        tmp_path / "straight" / "validation.csv"
    ).read_text()


def test_outputs_carry_provenance_and_the_best_epoch(data_dir, tmp_path):
    trainer = Trainer(
        "supervised",
        {},
        tiny_settings(),
        tiny_data(data_dir),
        tmp_path,
        seed=0,
        run_info={"dataset": "tiny", "ratio": 5},
    )
    trainer.fit()
    model = torch.load(tmp_path / "model.pt", weights_only=True)
    assert model["provenance"]["dataset"] == "tiny" and model["provenance"]["seed"] == 0
    assert {"code_version", "packages", "host"} <= set(model["provenance"])
    # what the run read and where it computed, to trace two runs that part
    labelled_and_eval, unlabelled = ["case_0", "case_1", "case_5"], ["case_2", "case_3", "case_4"]
    assert model["provenance"]["data_sha256"] == data_fingerprint(data_dir, labelled_and_eval, unlabelled)
    compute = model["provenance"]["compute"]
    assert compute["device"] == "cpu" and compute["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    validation = (tmp_path / "validation.csv").read_text().splitlines()
    assert validation[0] == "epoch,iteration,eval_mean_dice" and len(validation) == 5  # after epochs 0..3
    dices = [float(line.split(",")[2]) for line in validation[1:]]
    assert model["best_epoch"] == int(np.argmax(dices))
    assert model["best_eval_dice"] == pytest.approx(max(dices), abs=1e-4)


def case_lists(folder: Path) -> dict[str, Path]:
    """The tiny cases' split files, written to ``folder``, by split name."""
    lists = {}
    for name, ids in {
        "train": ["case_0", "case_1", "case_2", "case_3", "case_4"],
        "labelled": ["case_0", "case_1"],
        "unlabelled": ["case_2", "case_3", "case_4"],
        "eval": ["case_5"],
    }.items():
        lists[name] = folder / f"{name}.txt"
        lists[name].write_text("\n".join(ids) + "\n")
    return lists


@pytest.mark.slow
def test_sigterm_checkpoints_and_the_rerun_resumes_above_step_zero(data_dir, tmp_path):
    lists = case_lists(tmp_path)
    settings = json.dumps(
        dict(
            max_epochs=4,
            iterations_per_epoch=25,
            n_filters=2,
            patch_size=[16, 32, 32],
            queue_length=4,
            validate_every=2,
            window_stride=[16, 32, 32],
            checkpoint_every=1,
        )
    )
    out = tmp_path / "run"
    command = train_command(data_dir, out, lists, "supervised", train_settings=settings)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while not (out / "state" / "checkpoint.pt").exists():
        assert process.poll() is None and time.time() < deadline, "training ended before it could be stopped"
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 143, output
    assert "stopped at iteration" in output
    stopped_at = torch.load(out / "state" / "checkpoint.pt", weights_only=True)["iteration"]
    assert 0 < stopped_at < 125
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"resuming from {out / 'state' / 'checkpoint.pt'} at iteration {stopped_at}" in rerun.stdout
    iterations = [json.loads(line)["iteration"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert iterations == list(range(1, 126))  # epochs 0..4 of 25 iterations


HOLD_THE_RUN = """
import sys
from pathlib import Path
from micd.training.run_guard import one_trainer_per_run
with one_trainer_per_run(Path(sys.argv[1])):
    print("held", flush=True)
    sys.stdin.read()
"""


@pytest.mark.slow
def test_a_second_trainer_of_a_run_in_training_is_refused(data_dir, tmp_path):
    """The same run started while another process trains it (a job submitted twice, a requeued
    copy, two workflows with --nolock) is refused with the holder's name and writes nothing; the
    lock goes with its holder, even one killed without a chance to clean up."""
    out = tmp_path / "run"
    (out / "state").mkdir(parents=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_RUN, str(out / "state")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "held\n"
        refused = subprocess.run(
            train_command(data_dir, out, case_lists(tmp_path), "supervised"),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert f"micd train: error: run {out} is being trained by process {holder.pid} on " in refused.stderr
        assert "Traceback" not in refused.stderr
        assert [p.name for p in (out / "state").iterdir()] == ["trainer.lock"]
        with pytest.raises(RunInUseError, match=f"process {holder.pid}"):
            Trainer("supervised", {}, tiny_settings(), tiny_data(data_dir), out, seed=1).fit()
    finally:
        holder.kill()
        holder.wait()
    assert Trainer("supervised", {}, tiny_settings(), tiny_data(data_dir), out, seed=1).fit()
    assert len((out / "train_log.jsonl").read_text().splitlines()) == 8


def test_a_file_system_without_locks_trains_without_one(data_dir, tmp_path, monkeypatch, capsys):
    """flock failing for want of lock support (not because the run is held) does not stop a run."""
    import errno

    import micd.training.run_guard as run_guard

    def no_locks(handle, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(run_guard.fcntl, "flock", no_locks)
    assert Trainer("supervised", {}, tiny_settings(), tiny_data(data_dir), tmp_path / "run", seed=1).fit()
    assert "trainer.lock ([Errno 37] No locks available): training without one" in capsys.readouterr().out


def test_poly_schedule_and_mixed_precision_choice():
    assert poly_lr(0.03, 0, 200, 0.9) == 0.03
    assert poly_lr(0.03, 100, 200, 0.9) == pytest.approx(0.03 * 0.5**0.9)
    for amp in ("auto", "fp16", "bf16", "off"):  # never on the CPU
        assert autocast_dtype(amp, torch.device("cpu")) is None
    assert TrainSettings().amp == "fp16"  # DHC: fp16 autocast with a gradient scaler
    with pytest.raises(ValueError, match="amp"):
        autocast_dtype("fp8", torch.device("cpu"))


def test_unknown_train_setting_is_named():
    with pytest.raises(ValueError, match="max_epoch"):
        TrainSettings.from_dict({"max_epoch": 3})


def test_labelled_patch_sampling_follows_the_method_or_the_class_balanced_switch(data_dir, tmp_path, monkeypatch):
    import micd.training.loop as engine

    seen = []
    monkeypatch.setattr(
        engine,
        "labelled_sampler",
        lambda patch, probs: seen.append(probs) or __import__("torchio").UniformSampler(patch),
    )
    runs = (("supervised", {}, False), ("supervised", {}, True), ("cld", {"weighted_sampling": True}, False))
    for method, method_settings, balanced in runs:
        settings = tiny_settings(class_balanced=balanced)
        trainer = Trainer(method, method_settings, settings, tiny_data(data_dir), tmp_path, seed=0)
        trainer.method.initialise(engine.labelled_voxel_counts(trainer.data))
        trainer.streams()
    assert seen[0] is None
    assert seen[1] == {c: 1.0 for c in range(NUM_CLASSES)}
    assert seen[2] == trainer.method.patch_label_probabilities() and seen[2][0] == pytest.approx(1.0)
    assert max(seen[2].values()) > 1.0


@pytest.mark.slow
def test_the_command_line_names_a_bad_setting_without_a_traceback(data_dir, tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text("case_0\n")
    lists = {name: ids for name in ("train", "labelled", "unlabelled", "eval")}
    command = train_command(data_dir, tmp_path / "o", lists, "micd", method_settings='{"mask_ration": 0.3}')
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "micd train: error: micd has no setting 'mask_ration'; did you mean 'mask_ratio'?" in result.stderr
    assert "Traceback" not in result.stderr


class PoisonedFrom(Trainer):
    """A trainer whose loss turns NaN from a given iteration on; it checks each skipped step."""

    poison_from = 1  # 0-based iteration
    skipped_rows: list

    def step(self, streams, lr):
        original = self.method.training_step

        def poisoned(batch, progress):
            result = original(batch, progress)
            if progress.iteration >= self.poison_from:
                result.losses["loss"] = result.loss * float("nan")
            return result

        self.method.training_step = poisoned
        weights = {k: v.clone() for k, v in self.method.state_dict().items() if "running" not in k}
        optimiser = {k: o.state_dict() for k, o in self.optimisers.items()}
        momenta = [b.clone() for o in optimiser.values() for s in o["state"].values() for b in s.values()]
        try:
            row = super().step(streams, lr)
        finally:
            self.method.training_step = original
        if row.get("skipped"):
            after = self.method.state_dict()
            assert all(torch.equal(v, after[k]) for k, v in weights.items() if "num_batches" not in k)
            after_optimiser = [
                b for o in self.optimisers.values() for s in o.state_dict()["state"].values() for b in s.values()
            ]
            assert all(torch.equal(a, b) for a, b in zip(momenta, after_optimiser))
            self.skipped_rows.append(row)
        return row


def test_a_non_finite_loss_changes_no_weight_is_logged_and_a_run_of_them_stops(data_dir, tmp_path, capsys):
    from micd.training.loop import TrainingError

    trainer = PoisonedFrom("supervised", {}, tiny_settings(max_bad_steps=3), tiny_data(data_dir), tmp_path, seed=0)
    trainer.skipped_rows = []
    with pytest.raises(TrainingError, match=r"iteration 4 \(epoch 1\): 3 steps in a row skipped.*non-finite loss"):
        trainer.fit()
    assert [row["iteration"] for row in trainer.skipped_rows] == [2, 3]  # the third raised
    assert all(
        row["losses"]["loss"] is None and row["skipped"].startswith("non-finite loss") for row in trainer.skipped_rows
    )
    assert "iteration 2: update skipped, non-finite loss" in capsys.readouterr().out
    assert not (tmp_path / "model.pt").exists()


def test_a_single_bad_step_is_skipped_and_training_goes_on(data_dir, tmp_path):
    class OneBadStep(PoisonedFrom):
        def step(self, streams, lr):
            self.poison_from = 2 if self.iteration == 2 else 10**9
            return super().step(streams, lr)

    trainer = OneBadStep("supervised", {}, tiny_settings(max_bad_steps=2), tiny_data(data_dir), tmp_path, seed=0)
    trainer.skipped_rows = []
    assert trainer.fit()
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [row["iteration"] for row in log if "skipped" in row] == [3]
    assert len(log) == 8 and all(row["losses"]["loss"] is not None for row in log if "skipped" not in row)


def test_epochs_learning_rate_and_validation_follow_dhcs_loop(data_dir, tmp_path):
    """DHC: epochs 0..max_epoch; the learning rate set at the end of epoch e is used in e + 1;
    validation after every epoch whose index is a multiple of 10 (here: of validate_every)."""
    settings = tiny_settings(max_epochs=4, iterations_per_epoch=1, validate_every=2, lr=0.1)
    Trainer("supervised", {}, settings, tiny_data(data_dir), tmp_path, seed=0).fit()
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    dhc_lr = [0.1] + [0.1 * (1 - e / 4) ** 0.9 for e in range(4)]  # epoch 0 at the base rate, then poly(e - 1)
    assert [row["epoch"] for row in log] == [0, 1, 2, 3, 4]
    assert [row["lr"] for row in log] == pytest.approx(dhc_lr)
    validated = [int(line.split(",")[0]) for line in (tmp_path / "validation.csv").read_text().splitlines()[1:]]
    assert validated == [0, 2, 4]


@pytest.mark.parametrize("validation", ["centre_crop", "sliding_window"])
def test_validation_scores_the_configured_way(data_dir, tmp_path, validation, monkeypatch):
    import micd.training.loop as engine

    settings = tiny_settings(validation=validation)
    trainer = Trainer("supervised", {}, settings, tiny_data(data_dir), tmp_path, seed=0)
    calls = []
    monkeypatch.setattr(
        engine, "segment", lambda *a, **k: calls.append("window") or torch.zeros(20, 40, 40, dtype=torch.uint8)
    )
    dice = trainer.validate()
    assert (calls == ["window"]) == (validation == "sliding_window")
    label = np.load(data_dir / "labels" / "case_5.npy")
    if validation == "sliding_window":  # all background against three organs: 0
        assert dice == 0.0
    else:
        crop = engine.dhc_centre_crop(label, settings.patch_size)
        with torch.no_grad():
            logits = trainer.method.predict(
                torch.from_numpy(
                    engine.dhc_centre_crop(np.load(data_dir / "images" / "case_5.npy"), settings.patch_size)
                )[None, None]
            )
        assert dice == pytest.approx(engine.dhc_validation_dice(logits.argmax(1)[0].numpy(), crop, NUM_CLASSES))
    with pytest.raises(ValueError, match="validation"):
        TrainSettings.from_dict({"validation": "whole"})


@pytest.mark.slow
def test_a_checkpoint_of_other_settings_is_not_resumed(data_dir, tmp_path, capsys):
    """The workflow re-runs a training whose configuration changed; its old checkpoint (even of a
    finished run) must not be taken for this run's."""
    out = tmp_path / "run"
    assert Trainer("supervised", {}, tiny_settings(), tiny_data(data_dir), out, seed=1).fit()
    old = final_state(out)
    changed = Trainer("supervised", {}, tiny_settings(lr=0.1), tiny_data(data_dir), out, seed=1)
    assert changed.fit()
    said = capsys.readouterr().out
    assert "not resuming" in said and "train_settings.lr: 0.03 -> 0.1" in said, said
    log = [json.loads(x)["iteration"] for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert log == list(range(1, 9))  # trained all eight iterations again
    assert all(row["lr"] <= 0.1 for row in map(json.loads, (out / "train_log.jsonl").read_text().splitlines()))
    assert any(not torch.equal(old[k], v) for k, v in final_state(out).items())
    # a straight run at the new settings gives the same weights
    fresh = Trainer("supervised", {}, tiny_settings(lr=0.1), tiny_data(data_dir), tmp_path / "fresh", seed=1)
    assert fresh.fit()
    for key, value in final_state(tmp_path / "fresh").items():
        assert torch.equal(final_state(out)[key], value), key


def test_the_data_fingerprint_names_content_not_place(data_dir, tmp_path):
    """Copies of the same arrays elsewhere share a fingerprint; one changed label voxel does not."""
    cases = ["case_0", "case_1"]
    copy = tmp_path / "copy"
    for sub in ("images", "labels"):
        (copy / sub).mkdir(parents=True)
        for case in cases:
            (copy / sub / f"{case}.npy").write_bytes((data_dir / sub / f"{case}.npy").read_bytes())
    assert data_fingerprint(copy, cases) == data_fingerprint(data_dir, cases[::-1])
    label = np.load(copy / "labels" / "case_1.npy")
    label[0, 0, 0] += 1
    np.save(copy / "labels" / "case_1.npy", label)
    assert data_fingerprint(copy, cases) != data_fingerprint(data_dir, cases)
    # an unlabelled case is read without its label: one that is not there is no error
    (copy / "labels" / "case_1.npy").unlink()
    assert data_fingerprint(copy, ["case_0"], ["case_1"]) != data_fingerprint(data_dir, ["case_0"], ["case_1"])
    with pytest.raises(FileNotFoundError, match=r"case case_1: preprocessed file .*labels/case_1.npy does not exist"):
        data_fingerprint(copy, cases)
    (copy / "images" / "case_0.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"case case_0: preprocessed file .*case_0.npy does not exist"):
        data_fingerprint(copy, cases)


def test_a_checkpoint_of_other_data_is_not_resumed(data_dir, tmp_path, capsys):
    """Preprocessing run again with other results under the same case names: the checkpoint was
    trained on other arrays and must not be resumed."""
    moved = tmp_path / "data"
    for sub in ("images", "labels"):
        (moved / sub).mkdir(parents=True)
        for file in (data_dir / sub).iterdir():
            (moved / sub / file.name).write_bytes(file.read_bytes())
    out = tmp_path / "run"
    interrupted = StopAt("supervised", {}, tiny_settings(), tiny_data(moved), out, seed=1)
    assert not interrupted.fit()
    image = np.load(moved / "images" / "case_0.npy")
    np.save(moved / "images" / "case_0.npy", image * 2)
    assert Trainer("supervised", {}, tiny_settings(), tiny_data(moved), out, seed=1).fit()
    said = capsys.readouterr().out
    assert "not resuming" in said and "data_sha256" in said, said
    log = [json.loads(x)["iteration"] for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert log == list(range(1, 9))


def test_a_checkpoint_from_before_data_fingerprints_is_resumed(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert not StopAt("supervised", {}, tiny_settings(), tiny_data(data_dir), out, seed=1).fit()
    checkpoint = torch.load(out / "state" / "checkpoint.pt", weights_only=True)
    del checkpoint["run_identity"]["data_sha256"]
    torch.save(checkpoint, out / "state" / "checkpoint.pt")
    assert Trainer("supervised", {}, tiny_settings(), tiny_data(data_dir), out, seed=1).fit()
    assert "not resuming" not in capsys.readouterr().out


def test_execution_settings_do_not_make_a_checkpoint_foreign(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    interrupted = StopAt("supervised", {}, tiny_settings(), tiny_data(data_dir), out, seed=1)
    assert not interrupted.fit()
    capsys.readouterr()
    again = Trainer(
        "supervised", {}, tiny_settings(checkpoint_every=7, channels_last=False), tiny_data(data_dir), out, seed=1
    )
    assert again.fit()
    said = capsys.readouterr().out
    assert f"resuming from {out / 'state' / 'checkpoint.pt'} at iteration 3" in said, said


def test_flips_off_trains_on_unflipped_patches_and_the_model_file_says_so(data_dir, tmp_path):
    """train.flips: false, DHC's published runs (docs/protocol.md): no patch flipped, recorded."""
    for flips in (True, False):
        out = tmp_path / f"flips_{flips}"
        trainer = Trainer("supervised", {}, tiny_settings(max_epochs=1, flips=flips), tiny_data(data_dir), out, seed=0)
        labelled, _ = trainer.streams()
        with trainer.data_random.active():
            flipped = np.concatenate([next(labelled).flipped for _ in range(40)])
        assert flipped.any() == flips
        assert trainer.fit()
        model = read_model(out / "model.pt")
        assert model["provenance"]["flips"] is flips and model["train_settings"]["flips"] is flips
