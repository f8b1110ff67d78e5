"""The one training loop shared by every method.

The engine owns data streams, optimisers (SGD with Nesterov momentum, one per student),
the poly learning-rate schedule, mixed precision, EMA calls, validation with best-model
selection and early stopping, checkpoints and the per-iteration log. A method only turns a
batch into loss terms and diagnostics (``micd.methods.base.StepResult``).
"""

from __future__ import annotations

import functools
import json
import math
import os
import random
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from micd.atomic import atomic_write
from micd.data.loaders import (
    CaseVolumes,
    QueueSettings,
    UniformPatches,
    case_paths,
    data_fingerprint,
    labelled_sampler,
    patch_stream,
    stack_patches,
)
from micd.data.preprocess import preprocessing_record
from micd.devices import resolve_device
from micd.errors import DataError, SettingsError
from micd.evaluation.measures import dhc_centre_crop, dhc_validation_dice, mean_foreground_dice
from micd.inference.sliding_window import segment
from micd.methods import Batch, Method, Progress, build_method
from micd.model_file import model_record, read_model, save_model
from micd.provenance import atomic_torch_save, compute_environment, provenance
from micd.settings import AMP_MODES, EXECUTION_SETTINGS, TrainSettings
from micd.torch_files import UnreadableTorchFile, load_weights_only
from micd.training.console import TrainingConsole, start_line
from micd.training.run_guard import one_trainer_per_run, stop_on_sigterm


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss stayed non-finite); the message names the iteration."""


@dataclass
class TrainData:
    data_dir: Path  # output of the preprocess rule (images/, labels/)
    labelled: list[str]
    unlabelled: list[str]
    eval: list[str]
    num_classes: int


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The mixed-precision dtype to use, or None for full precision (always on the CPU)."""
    if amp not in AMP_MODES:
        raise SettingsError(f"train.amp must be one of {list(AMP_MODES)}, got {amp!r}")
    if amp == "off" or device.type != "cuda":
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if amp == "bf16" else torch.float16


def poly_lr(base_lr: float, epoch: int, max_epochs: int, power: float) -> float:
    """``base_lr (1 - epoch / max_epochs)^power``; DHC's ``poly_lr``, given the schedule epoch."""
    return base_lr * (1 - epoch / max_epochs) ** power


def labelled_voxel_counts(data: TrainData) -> torch.Tensor:
    counts = np.zeros(data.num_classes, dtype=np.float64)
    for case_id in data.labelled:
        counts += np.bincount(np.load(case_paths(data.data_dir, case_id)[1]).ravel(), minlength=data.num_classes)
    return torch.from_numpy(counts)


class DataRandomness:
    """The data pipeline's own torch random stream, kept apart from the model's (dropout).

    TorchIO's samplers, flips and queue shuffles draw from torch's global generator. Fetching
    batches inside :meth:`active` gives them a separate stream, so a resumed run can replay an
    epoch's data from the epoch's start state without touching the model's random state.
    """

    def __init__(self, seed: int) -> None:
        self.state = torch.Generator().manual_seed(seed).get_state()

    @contextmanager
    def active(self):
        model_state = torch.get_rng_state()
        torch.set_rng_state(self.state)
        try:
            yield
        finally:
            self.state = torch.get_rng_state()
            torch.set_rng_state(model_state)


class Trainer:
    """Trains one method on one split with one seed.

    Declared outputs in ``out_dir``, written when training ends: ``model.pt`` (best weights
    and provenance), ``train_log.jsonl`` (one line per iteration: losses, learning rate,
    data-wait and compute seconds) and ``validation.csv``. While it runs, its state lives in
    ``out_dir/state/``; a run started again on the same ``out_dir`` resumes from
    ``state/checkpoint.pt`` exactly where the last one stopped.
    """

    def __init__(
        self,
        method_name: str,
        method_settings: dict[str, Any] | None,
        settings: TrainSettings,
        data: TrainData,
        out_dir: Path,
        seed: int,
        run_info: dict[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.data = data
        self.out_dir = Path(out_dir)
        self.state_dir = self.out_dir / "state"
        self.seed = seed
        self.device = resolve_device(settings.device)
        seed_everything(seed)
        self.method: Method = build_method(
            method_name, method_settings, data.num_classes, settings.n_filters, settings.dropout
        )
        self.memory_format = torch.channels_last_3d if settings.channels_last else torch.contiguous_format
        self.method.to(self.device, memory_format=self.memory_format)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = settings.cudnn_benchmark
        if settings.compile:
            for net in [*self.method.students().values(), *self.method.teachers()]:
                net.compile()
        self.method_settings = asdict(self.method.settings)
        self.run_info = dict(run_info or {}, method=method_name, seed=seed)
        # what the run read and where it computed: two runs of one configuration that part can be
        # told apart by their data or by their host's float kernels (docs/benchmark.md)
        self.run_info["data_sha256"] = data_fingerprint(data.data_dir, [*data.labelled, *data.eval], data.unlabelled)
        self.run_info["compute"] = compute_environment(self.device)
        self.run_info["flips"] = settings.flips  # whether patches were flipped (off for DHC's published runs)
        # what a checkpoint must have been trained on to be resumed (see resume)
        self.run_identity = {
            "method": method_name,
            "method_settings": self.method_settings,
            "train_settings": {k: v for k, v in asdict(settings).items() if k not in EXECUTION_SETTINGS},
            "seed": seed,
            "num_classes": data.num_classes,
            "cases": {"labelled": data.labelled, "unlabelled": data.unlabelled, "eval": data.eval},
            "data_sha256": self.run_info["data_sha256"],
        }
        self.optimisers = {
            name: torch.optim.SGD(
                net.parameters(),
                lr=settings.lr,
                momentum=settings.momentum,
                weight_decay=settings.weight_decay,
                nesterov=settings.nesterov,
            )
            for name, net in self.method.students().items()
        }
        self.amp_dtype = autocast_dtype(settings.amp, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.data_random = DataRandomness(seed)
        self.epoch_data_state = self.data_random.state  # the data stream's state when this epoch began
        self.epoch = 0
        self.done_in_epoch = 0  # iterations of the current epoch already trained
        self.iteration = 0
        self.best_dice = -1.0
        self.best_epoch = -1
        self.bad_steps = 0  # consecutive skipped updates
        self._stop_requested = False

    def request_stop(self) -> None:
        """Checkpoint after the current iteration and return from :meth:`fit`."""
        self._stop_requested = True

    # ----- data -----------------------------------------------------------------------
    @functools.cached_property
    def feed_cases(self) -> dict[str, CaseVolumes]:
        """The labelled and unlabelled cases, memory-mapped once per job (micd.data.loaders)."""
        return {
            "labelled": CaseVolumes(self.data.data_dir, self.data.labelled),
            "unlabelled": CaseVolumes(self.data.data_dir, self.data.unlabelled, with_label=False),
        }

    def streams(self):
        s = self.settings
        queue = QueueSettings(tuple(s.patch_size), s.samples_per_volume, s.queue_length, s.num_workers, s.flips)
        probabilities = self.method.patch_label_probabilities()
        if probabilities is None and s.class_balanced:
            probabilities = {c: 1.0 for c in range(self.data.num_classes)}
        sampler = labelled_sampler(s.patch_size, probabilities)
        labelled_stream = patch_stream(self.feed_cases["labelled"], sampler, s.batch_labelled, queue)
        unlabelled_stream = None
        if self.method.uses_unlabelled and self.data.unlabelled:
            uniform = UniformPatches(s.patch_size)
            unlabelled_stream = patch_stream(self.feed_cases["unlabelled"], uniform, s.batch_unlabelled, queue)
        return labelled_stream, unlabelled_stream

    def iterations_per_epoch(self) -> int:
        s = self.settings
        if s.iterations_per_epoch:
            return s.iterations_per_epoch
        # One pass over the split's unlabelled cases, also for methods that ignore them, so
        # every method of a split trains for the same number of iterations.
        if self.data.unlabelled:
            return math.ceil(len(self.data.unlabelled) * s.samples_per_volume / s.batch_unlabelled)
        return math.ceil(len(self.data.labelled) * s.samples_per_volume / s.batch_labelled)

    def _next_batch(self, streams) -> Batch:
        labelled_stream, unlabelled_stream = streams
        with self.data_random.active():
            labelled = next(labelled_stream)
            images = labelled.images
            if unlabelled_stream is not None:
                images = images + next(unlabelled_stream).images
        # one copy of each patch into the batch, page-locked on a GPU so the copies below overlap its work
        pin = self.device.type == "cuda"
        image, label = stack_patches(images, pin).float(), stack_patches(labelled.labels, pin)[:, 0]
        image = image.to(self.device, non_blocking=True, memory_format=self.memory_format)
        label = label.to(self.device, non_blocking=True).long()  # the label's stored bytes cross, not int64
        return Batch(image=image, label=label)

    # ----- checkpoints ----------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.state_dir / "checkpoint.pt"

    def _random_states(self) -> dict[str, Any]:
        # NumPy's and Python's states as tensors, numbers and lists: a checkpoint loads with
        # weights_only=True (micd.torch_files), which refuses NumPy arrays
        states = {
            "torch": torch.get_rng_state(),
            "numpy": numpy_random_state(),
            "python": python_random_state(),
            "epoch_data": self.epoch_data_state,
        }
        if self.device.type == "cuda":
            states["cuda"] = torch.cuda.get_rng_state(self.device)
        return states

    def save_checkpoint(self) -> None:
        atomic_torch_save(
            {
                "method": self.method.state_dict(),
                "optimisers": {k: o.state_dict() for k, o in self.optimisers.items()},
                "scaler": self.scaler.state_dict(),
                "epoch": self.epoch,
                "done_in_epoch": self.done_in_epoch,
                "iteration": self.iteration,
                "best_dice": self.best_dice,
                "best_epoch": self.best_epoch,
                "random": self._random_states(),
                "run_identity": self.run_identity,
            },
            self.checkpoint_path,
        )

    def resume(self) -> bool:
        """Load ``state/checkpoint.pt`` if an earlier run of this job left one.

        A checkpoint trained under other settings, seed or case lists (the configuration changed
        and the workflow re-runs the job) is not resumed: the run starts afresh and says why.
        """
        if not self.checkpoint_path.is_file():
            return False
        state = self._read_checkpoint()
        if state is None:
            return False
        # checkpoints written before runs fingerprinted their data are judged on the rest
        written = {"data_sha256": self.run_identity["data_sha256"], **state.get("run_identity", self.run_identity)}
        changed = _differences(written, self.run_identity)
        if changed:
            print(
                f"not resuming {self.checkpoint_path}: it was trained with other settings or data "
                f"({'; '.join(changed)}); training afresh",
                flush=True,
            )
            (self.state_dir / "best.pt").unlink(missing_ok=True)
            return False
        try:
            self.method.load_state_dict(state["method"])
            for name, optimiser in self.optimisers.items():
                optimiser.load_state_dict(state["optimisers"][name])
            self.scaler.load_state_dict(state["scaler"])
            rs = state["random"]
            torch.set_rng_state(rs["torch"])
            set_numpy_random_state(rs["numpy"])
            set_python_random_state(rs["python"])
            if "cuda" in rs:
                torch.cuda.set_rng_state(rs["cuda"], self.device)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            # part of the state may be loaded already: this process cannot start afresh cleanly
            aside = self._set_checkpoint_aside()
            raise DataError(
                f"file {self.checkpoint_path}: its content does not fit this run ({type(exc).__name__}: {exc}); "
                f"it was set aside as {aside.name}: run the same command again to train afresh"
            ) from None
        self.epoch, self.done_in_epoch, self.iteration = state["epoch"], state["done_in_epoch"], state["iteration"]
        self.best_dice, self.best_epoch = state["best_dice"], state["best_epoch"]
        self.data_random.state = rs["epoch_data"]
        # drop log lines of iterations after the checkpoint: they are trained again
        _keep_rows(self.state_dir / "train_log.jsonl", lambda line: json.loads(line)["iteration"] <= self.iteration)
        _keep_rows(
            self.state_dir / "validation.csv",
            lambda line: line.startswith("epoch") or int(line.split(",")[1]) <= self.iteration,
        )
        return True

    def _read_checkpoint(self) -> dict[str, Any] | None:
        """The checkpoint's dictionary; None, after setting the file aside, if it is damaged,
        unsafe to load or lacks what resuming needs."""
        try:
            state = load_weights_only(self.checkpoint_path, self.device, "a training checkpoint")
        except UnreadableTorchFile as exc:
            reason = str(exc)
        else:
            missing = [key for key in CHECKPOINT_KEYS if not isinstance(state, dict) or key not in state]
            if not missing and not isinstance(state["random"], dict):
                missing = ["random states"]
            missing += [f"random.{key}" for key in RANDOM_KEYS if not missing and key not in state["random"]]
            if not missing:
                return state
            reason = f"it has no {', '.join(missing)}"
        aside = self._set_checkpoint_aside()
        print(f"setting aside {self.checkpoint_path} as {aside.name}: {reason}; training afresh", flush=True)
        return None

    def _set_checkpoint_aside(self) -> Path:
        """Rename the checkpoint (never delete it: it may be the only copy of days of training)
        and drop the best model of that progress; returns the new path."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = self.checkpoint_path.with_name(f"{self.checkpoint_path.name}.corrupt-{stamp}")
        taken = 1
        while aside.exists():  # an earlier one set aside in the same second is kept too
            taken += 1
            aside = aside.with_name(f"{self.checkpoint_path.name}.corrupt-{stamp}-{taken}")
        os.replace(self.checkpoint_path, aside)
        (self.state_dir / "best.pt").unlink(missing_ok=True)
        return aside

    def _model_record(self) -> dict[str, Any]:
        return model_record(
            method=self.run_info["method"],
            method_state=self.method.inference_state_dict(),
            method_settings=self.method_settings,
            train_settings=asdict(self.settings),
            num_classes=self.data.num_classes,
            best_epoch=self.best_epoch,
            best_eval_dice=self.best_dice,
            provenance=provenance(self.run_info),
            preprocessing=preprocessing_record(self.data.data_dir),
        )

    # ----- validation -----------------------------------------------------------------
    def validate(self) -> float:
        """Mean foreground Dice (%) over the eval cases, by ``settings.validation``:

        - ``centre_crop`` (DHC): one patch-sized centre crop per case, one forward pass, scored
          with DHC's soft Dice at smooth 1e-8 (a class absent from crop and prediction scores 50);
        - ``sliding_window``: the whole case segmented as at test time, scored as the tables are.
        """
        s = self.settings
        self.method.eval()
        dices = []
        with torch.no_grad():
            for case_id in self.data.eval:
                image_path, label_path = case_paths(self.data.data_dir, case_id)
                image, label = np.load(image_path), np.load(label_path)
                if s.validation == "centre_crop":
                    image, label = dhc_centre_crop(image, s.patch_size), dhc_centre_crop(label, s.patch_size)
                    logits = self.method.predict(
                        torch.from_numpy(np.ascontiguousarray(image))[None, None].to(self.device)
                    )
                    prediction = logits.argmax(1)[0].cpu().numpy()
                    dices.append(dhc_validation_dice(prediction, label, self.data.num_classes))
                else:
                    prediction = segment(
                        self.method.predict, torch.from_numpy(image), s.patch_size, s.window_stride, device=self.device
                    )
                    dices.append(mean_foreground_dice(prediction.numpy(), label, self.data.num_classes))
        self.method.train()
        return float(np.mean(dices))

    def _validate_and_select(self, epoch: int, validation_log) -> bool:
        """After epoch ``epoch`` (DHC: every epoch whose index is a multiple of ``validate_every``),
        validate and keep the best model. True: stop early."""
        s = self.settings
        if not self.data.eval or epoch % s.validate_every:
            self.console.epoch_line(epoch)
            return False
        dice = self.validate()
        validation_log.write(f"{epoch},{self.iteration},{dice:.4f}\n")
        validation_log.flush()
        self.console.epoch_line(epoch, f"eval mean Dice {dice:.2f}")
        if dice > self.best_dice:
            self.best_dice, self.best_epoch = dice, epoch
            save_model(self._model_record(), self.state_dir / "best.pt")
            return False
        if s.early_stop_patience is not None and epoch - self.best_epoch >= s.early_stop_patience:
            print(f"early stop: no better eval Dice since epoch {self.best_epoch}", flush=True)
            return True
        return False

    # ----- the loop -------------------------------------------------------------------
    def fit(self) -> bool:
        """Train to the end (True) or until a stop is requested (False, after a checkpoint).

        As DHC's loop: epochs 0 .. ``max_epochs``; epoch e trains at the learning rate (and
        consistency weight) of schedule epoch ``max(e - 1, 0)``.
        """
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with one_trainer_per_run(self.state_dir):
            return self._fit()

    def _fit(self) -> bool:
        s = self.settings
        resumed = self.resume()
        if resumed:
            print(
                f"resuming from {self.checkpoint_path} at iteration {self.iteration} (epoch {self.epoch})", flush=True
            )
        else:
            self.method.initialise(labelled_voxel_counts(self.data), len(self.data.unlabelled))
            (self.state_dir / "validation.csv").write_text("epoch,iteration,eval_mean_dice\n")
            (self.state_dir / "train_log.jsonl").write_text("")
        per_epoch = self.iterations_per_epoch()
        self.console = TrainingConsole(s.max_epochs, per_epoch, done=self.iteration)
        self.console.say(start_line(self.run_info, self.run_info["compute"], s.max_epochs, per_epoch, self.iteration))
        with (
            open(self.state_dir / "train_log.jsonl", "a") as log,
            open(self.state_dir / "validation.csv", "a") as validation_log,
            stop_on_sigterm(self.request_stop),
        ):
            self.method.train()
            while self.epoch <= s.max_epochs:
                self.epoch_data_state = self.data_random.state
                streams = self.streams()
                for _ in range(self.done_in_epoch):  # resumed mid-epoch: replay the data seen
                    self._next_batch(streams)
                lr = poly_lr(s.lr, max(self.epoch - 1, 0), s.max_epochs, s.poly_power)
                for optimiser in self.optimisers.values():
                    for group in optimiser.param_groups:
                        group["lr"] = lr
                # a progress bar on a terminal, plain progress lines in a job's log file
                self.console.begin_epoch(self.epoch, self.done_in_epoch)
                while self.done_in_epoch < per_epoch:
                    row = self.step(streams, lr)
                    log.write(json.dumps(row) + "\n")
                    self.done_in_epoch += 1
                    self.console.after_iteration(row)
                    if self._stop_requested or self.iteration % s.checkpoint_every == 0:
                        log.flush()
                        self.save_checkpoint()
                        if self._stop_requested:
                            print(
                                f"stopped at iteration {self.iteration}; checkpoint {self.checkpoint_path}", flush=True
                            )
                            return False
                self.console.end_epoch()
                finished = self.epoch
                self.epoch += 1
                self.done_in_epoch = 0
                self.epoch_data_state = self.data_random.state
                stop_early = self._validate_and_select(finished, validation_log)
                log.flush()
                self.save_checkpoint()
                if stop_early:
                    break
        self._write_outputs()
        return True

    def _write_outputs(self) -> None:
        best = self.state_dir / "best.pt"
        save_model(read_model(best) if best.is_file() else self._model_record(), self.out_dir / "model.pt")
        for name in ("train_log.jsonl", "validation.csv"):
            atomic_write(self.out_dir / name, (self.state_dir / name).read_text())

    def step(self, streams, lr: float) -> dict[str, Any]:
        """One iteration. A non-finite loss (or, without a gradient scaler, a non-finite gradient)
        changes no weight and no optimiser state: the update is skipped and logged, and
        ``max_bad_steps`` such steps in a row stop the run with a :class:`TrainingError`."""
        started = time.perf_counter()
        batch = self._next_batch(streams)
        data_ready = time.perf_counter()
        progress = Progress(self.epoch, self.settings.max_epochs, self.iteration, self.iterations_per_epoch())
        autocast = torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype else nullcontext()
        with autocast:
            result = self.method.training_step(batch, progress)
        for optimiser in self.optimisers.values():
            optimiser.zero_grad(set_to_none=True)
        skipped = self._skip_reason(result.loss)
        if skipped is None:
            self.scaler.scale(result.loss).backward()
            if not self.scaler.is_enabled():
                skipped = self._skip_reason_of_gradients()
        if skipped is None:
            for optimiser in self.optimisers.values():
                self.scaler.step(optimiser)  # with a scaler, it skips steps whose gradients overflowed
            self.scaler.update()
            self.method.after_step(progress)
            self.bad_steps = 0
        else:
            for optimiser in self.optimisers.values():
                optimiser.zero_grad(set_to_none=True)
            self.bad_steps += 1
            print(f"iteration {self.iteration + 1}: update skipped, {skipped}", flush=True)
            if self.bad_steps >= self.settings.max_bad_steps:
                raise TrainingError(
                    f"iteration {self.iteration + 1} (epoch {self.epoch}): {self.bad_steps} steps in a row skipped, "
                    f"the last for {skipped}; terms {_finite_or_none(result.losses)}. Lower train.lr, or set train.amp "
                    "to 'fp16' (a gradient scaler) or 'off'."
                )
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        finished = time.perf_counter()
        self.iteration += 1
        row = {
            "epoch": self.epoch,
            "iteration": self.iteration,
            "lr": lr,
            "losses": _finite_or_none(result.losses),
            "diagnostics": _finite_or_none(result.diagnostics),
            "data_s": round(data_ready - started, 5),
            "compute_s": round(finished - data_ready, 5),
        }
        if skipped is not None:
            row["skipped"] = skipped
        return row

    @staticmethod
    def _skip_reason(loss: torch.Tensor) -> str | None:
        return None if bool(torch.isfinite(loss.detach())) else f"non-finite loss ({float(loss.detach())})"

    def _skip_reason_of_gradients(self) -> str | None:
        for name, net in self.method.students().items():
            grads = [p.grad for p in net.parameters() if p.grad is not None]
            if grads and not bool(torch.isfinite(torch.stack([g.detach().abs().sum() for g in grads])).all()):
                return f"non-finite gradient in {name}"
        return None


CHECKPOINT_KEYS = (
    "method",
    "optimisers",
    "scaler",
    "epoch",
    "done_in_epoch",
    "iteration",
    "best_dice",
    "best_epoch",
    "random",
)
RANDOM_KEYS = ("torch", "numpy", "python", "epoch_data")


def numpy_random_state() -> dict[str, Any]:
    """NumPy's global random state in types a weights-only load accepts."""
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "kind": kind,
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "position": int(position),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached_gaussian),
    }


def set_numpy_random_state(state: dict[str, Any]) -> None:
    keys = state["keys"].cpu().numpy().astype(np.uint32)
    np.random.set_state((state["kind"], keys, state["position"], state["has_gauss"], state["cached_gaussian"]))


def python_random_state() -> list[Any]:
    """Python's random state as lists: [version, [internal state...], gauss_next]."""
    version, internal, gauss_next = random.getstate()
    return [version, list(internal), gauss_next]


def set_python_random_state(state: list[Any]) -> None:
    version, internal, gauss_next = state
    random.setstate((version, tuple(internal), gauss_next))


def _finite_or_none(terms: dict[str, torch.Tensor]) -> dict[str, float | None]:
    """Logged values of a step for the JSON log, rounded; a non-finite value becomes null."""
    values = {k: float(v.detach()) for k, v in terms.items()}
    return {k: round(v, 6) if math.isfinite(v) else None for k, v in values.items()}


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """``key: old -> new`` for every leaf that differs between two nested dicts."""
    changed = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changed += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            shown = [r if len(r := repr(v)) <= 60 else r[:57] + "..." for v in (a, b)]  # case lists are long
            changed.append(f"{prefix}{key}: {shown[0]} -> {shown[1]}")
    return changed


def _keep_rows(path: Path, keep) -> None:
    if path.is_file():
        lines = [line for line in path.read_text().splitlines() if line.strip() and keep(line)]
        atomic_write(path, "".join(line + "\n" for line in lines))
