"""The one training loop shared by every method.

The engine owns data streams, optimisers (SGD with Nesterov momentum, one per student),
the poly learning-rate schedule, mixed precision, EMA calls, validation with best-model
selection and early stopping, checkpoints and the per-iteration log. A method only turns a
batch into loss terms (see ``micd.methods.base``).
"""

from __future__ import annotations

import json
import math
import random
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchio as tio

from micd.data.loaders import QueueSettings, case_paths, labelled_sampler, load_subject, patch_stream
from micd.evaluation.inference import segment
from micd.evaluation.metrics import mean_foreground_dice
from micd.methods import Batch, Method, Progress, build_method
from micd.provenance import atomic_torch_save, provenance


@dataclass
class TrainSettings:
    """Settings of the training loop; defaults are DHC's protocol (docs/method.md, section 3)."""

    max_epochs: int = 200
    iterations_per_epoch: int | None = None  # None: one pass over the unlabelled set
    lr: float = 3e-2
    momentum: float = 0.9
    weight_decay: float = 3e-5
    nesterov: bool = True
    poly_power: float = 0.9
    n_filters: int = 32
    patch_size: list[int] = field(default_factory=lambda: [64, 128, 128])
    batch_labelled: int = 2
    batch_unlabelled: int = 2
    samples_per_volume: int = 1
    queue_length: int = 16
    num_workers: int = 0
    class_balanced: bool = False
    validate_every: int = 10  # epochs
    early_stop_patience: int | None = 50  # epochs without a better eval Dice; None: never stop
    window_stride: list[int] = field(default_factory=lambda: [16, 32, 32])
    amp: str = "auto"  # "auto": bf16 where supported, else fp16 on CUDA; off on CPU. Or "off", "bf16", "fp16"
    device: str = "auto"

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainSettings":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown train setting(s) {unknown}; known: {sorted(known)}")
        return cls(**values)


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


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The mixed-precision dtype to use, or None for full precision."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if amp in ("bf16", "fp16"):
        return torch.bfloat16 if amp == "bf16" else torch.float16
    raise ValueError(f"train.amp must be 'auto', 'off', 'bf16' or 'fp16', got {amp!r}")


def poly_lr(base_lr: float, epoch: int, max_epochs: int, power: float) -> float:
    return base_lr * (1 - epoch / max_epochs) ** power


def labelled_voxel_counts(data: TrainData) -> torch.Tensor:
    counts = np.zeros(data.num_classes, dtype=np.float64)
    for case_id in data.labelled:
        counts += np.bincount(np.load(case_paths(data.data_dir, case_id)[1]).ravel(), minlength=data.num_classes)
    return torch.from_numpy(counts)


class Trainer:
    """Trains one method on one split with one seed, writing into ``out_dir``:

    ``model.pt`` (best weights and provenance), ``checkpoint.pt`` (to resume),
    ``train_log.jsonl`` (one line per iteration) and ``validation.csv``.
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
        self.seed = seed
        self.device = resolve_device(settings.device)
        seed_everything(seed)
        self.method: Method = build_method(method_name, method_settings, data.num_classes, settings.n_filters)
        self.method.to(self.device)
        self.method_settings = asdict(self.method.settings)
        self.run_info = dict(run_info or {}, method=method_name, seed=seed)
        if hasattr(self.method, "mask_generator"):
            self.method.mask_generator.manual_seed(seed)
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
        self.epoch = 0
        self.iteration = 0
        self.best_dice = -1.0
        self.best_epoch = -1

    # ----- data -----------------------------------------------------------------------
    def _streams(self):
        s = self.settings
        queue = QueueSettings(tuple(s.patch_size), s.samples_per_volume, s.queue_length, s.num_workers,
                              s.class_balanced)
        labelled = [load_subject(self.data.data_dir, c) for c in self.data.labelled]
        sampler = labelled_sampler(s.patch_size, self.data.num_classes, s.class_balanced)
        labelled_stream = patch_stream(labelled, sampler, s.batch_labelled, queue)
        unlabelled_stream = None
        if self.method.uses_unlabelled and self.data.unlabelled:
            unlabelled = [load_subject(self.data.data_dir, c, with_label=False) for c in self.data.unlabelled]
            unlabelled_stream = patch_stream(unlabelled, tio.UniformSampler(s.patch_size), s.batch_unlabelled, queue)
        return labelled_stream, unlabelled_stream

    def iterations_per_epoch(self) -> int:
        s = self.settings
        if s.iterations_per_epoch:
            return s.iterations_per_epoch
        if self.method.uses_unlabelled and self.data.unlabelled:
            return math.ceil(len(self.data.unlabelled) * s.samples_per_volume / s.batch_unlabelled)
        return math.ceil(len(self.data.labelled) * s.samples_per_volume / s.batch_labelled)

    def _batch(self, labelled_stream, unlabelled_stream) -> Batch:
        labelled = next(labelled_stream)
        images = [labelled["image"][tio.DATA]]
        if unlabelled_stream is not None:
            images.append(next(unlabelled_stream)["image"][tio.DATA])
        image = torch.cat(images).float().to(self.device, non_blocking=True)
        label = labelled["label"][tio.DATA][:, 0].long().to(self.device, non_blocking=True)
        return Batch(image=image, label=label)

    # ----- checkpoints ----------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / "checkpoint.pt"

    def _checkpoint(self) -> dict[str, Any]:
        return {
            "method": self.method.state_dict(),
            "optimisers": {k: o.state_dict() for k, o in self.optimisers.items()},
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "iteration": self.iteration,
            "best_dice": self.best_dice,
            "best_epoch": self.best_epoch,
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
        }

    def resume(self) -> bool:
        """Load ``checkpoint.pt`` if a previous run of this job left one."""
        if not self.checkpoint_path.is_file():
            return False
        state = torch.load(self.checkpoint_path, map_location=self.device, weights_only=False)
        self.method.load_state_dict(state["method"])
        for name, optimiser in self.optimisers.items():
            optimiser.load_state_dict(state["optimisers"][name])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.iteration = state["epoch"], state["iteration"]
        self.best_dice, self.best_epoch = state["best_dice"], state["best_epoch"]
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])
        return True

    def _save_model(self) -> None:
        atomic_torch_save(
            {
                "method_state": self.method.state_dict(),
                "method_settings": self.method_settings,
                "train_settings": asdict(self.settings),
                "num_classes": self.data.num_classes,
                "best_epoch": self.best_epoch,
                "best_eval_dice": self.best_dice,
                "provenance": provenance(self.run_info),
            },
            self.out_dir / "model.pt",
        )

    # ----- validation -----------------------------------------------------------------
    def validate(self) -> float:
        self.method.eval()
        dices = []
        for case_id in self.data.eval:
            image_path, label_path = case_paths(self.data.data_dir, case_id)
            volume = torch.from_numpy(np.load(image_path))
            prediction = segment(self.method.predict, volume, self.settings.patch_size,
                                 self.settings.window_stride, device=self.device)
            dices.append(mean_foreground_dice(prediction.numpy(), np.load(label_path), self.data.num_classes))
        self.method.train()
        return float(np.mean(dices))

    # ----- the loop -------------------------------------------------------------------
    def fit(self) -> Path:
        s = self.settings
        self.out_dir.mkdir(parents=True, exist_ok=True)
        resumed = self.resume()
        if not resumed:
            self.method.initialise(labelled_voxel_counts(self.data))
        labelled_stream, unlabelled_stream = self._streams()
        per_epoch = self.iterations_per_epoch()
        log_mode = "a" if resumed else "w"
        with open(self.out_dir / "train_log.jsonl", log_mode) as log, \
                open(self.out_dir / "validation.csv", log_mode) as validation_log:
            if not resumed:
                validation_log.write("epoch,iteration,eval_mean_dice\n")
            self.method.train()
            while self.epoch < s.max_epochs:
                lr = poly_lr(s.lr, self.epoch, s.max_epochs, s.poly_power)
                for optimiser in self.optimisers.values():
                    for group in optimiser.param_groups:
                        group["lr"] = lr
                for _ in range(per_epoch):
                    log.write(json.dumps(self._step(labelled_stream, unlabelled_stream, lr)) + "\n")
                self.epoch += 1
                last = self.epoch == s.max_epochs
                if self.data.eval and (self.epoch % s.validate_every == 0 or last):
                    dice = self.validate()
                    validation_log.write(f"{self.epoch},{self.iteration},{dice:.4f}\n")
                    validation_log.flush()
                    print(f"epoch {self.epoch}/{s.max_epochs}: eval mean Dice {dice:.2f}", flush=True)
                    if dice > self.best_dice:
                        self.best_dice, self.best_epoch = dice, self.epoch
                        self._save_model()
                    elif s.early_stop_patience is not None and self.epoch - self.best_epoch >= s.early_stop_patience:
                        print(f"early stop: no better eval Dice since epoch {self.best_epoch}", flush=True)
                        break
                log.flush()
                atomic_torch_save(self._checkpoint(), self.checkpoint_path)
        if self.best_epoch < 0:  # no eval split: keep the last weights
            self.best_epoch = self.epoch
            self._save_model()
        return self.out_dir / "model.pt"

    def _step(self, labelled_stream, unlabelled_stream, lr: float) -> dict[str, Any]:
        started = time.perf_counter()
        batch = self._batch(labelled_stream, unlabelled_stream)
        data_ready = time.perf_counter()
        progress = Progress(epoch=self.epoch, max_epochs=self.settings.max_epochs, iteration=self.iteration)
        autocast = (torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype else nullcontext())
        with autocast:
            terms = self.method.training_step(batch, progress)
        for optimiser in self.optimisers.values():
            optimiser.zero_grad(set_to_none=True)
        self.scaler.scale(terms["loss"]).backward()
        for optimiser in self.optimisers.values():
            self.scaler.step(optimiser)
        self.scaler.update()
        self.method.after_step(progress)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        finished = time.perf_counter()
        self.iteration += 1
        return {
            "epoch": self.epoch,
            "iteration": self.iteration,
            "lr": lr,
            **{k: round(float(v), 6) for k, v in terms.items()},
            "data_s": round(data_ready - started, 5),
            "compute_s": round(finished - data_ready, 5),
        }
