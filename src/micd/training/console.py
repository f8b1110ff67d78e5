"""What a training job tells the person watching it, on the console or in the job's log.

- a start line: method, run, device, how many iterations;
- progress: on a terminal a tqdm bar; in a log file (a Snakemake or SLURM job) a plain line
  every 5 % of the run and at least once a minute: iteration, mean loss since the last line,
  iterations per second, time spent and left;
- after each epoch a line with the share of its time spent waiting for data (from the data-wait
  and compute seconds of each train_log.jsonl row), after the eval Dice where the epoch is
  validated.

    training micd (run micd_r0.5) on synthetic, 5 % labelled, seed 0; cpu, 1 thread: epochs 0..8 of 17 iterations, 153 in all
    iteration 8/153 (5 %), epoch 0/8: loss 1.2345, 2.10 it/s, 0:00:04 spent, 0:01:09 left
    epoch 0/8: eval mean Dice 3.21; 17 iterations in 0:00:08, data wait 14 %
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, TextIO

from tqdm import tqdm

LINE_SHARE = 0.05  # a progress line every 5 % of the run's iterations ...
LINE_SECONDS = 60.0  # ... and at least once a minute


def clock_text(seconds: float) -> str:
    """``h:mm:ss``."""
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def start_line(run_info: dict[str, Any], compute: dict[str, Any], max_epochs: int, per_epoch: int, done: int) -> str:
    """What the job trains, where, and for how long; ``done`` iterations already trained (a resume)."""
    method, variant = run_info.get("method"), run_info.get("variant")
    run = f" (run {variant})" if variant and variant != method else ""
    where = [f"on {run_info['dataset']}"] if run_info.get("dataset") else []
    if run_info.get("ratio") is not None:
        where.append(f"{run_info['ratio']} % labelled")
    where.append(f"seed {run_info.get('seed')}")
    device = compute.get("gpu") or compute.get("device", "?")
    threads = compute.get("threads")
    device += f", {threads} thread{'s' if threads != 1 else ''}" if threads and compute.get("device") == "cpu" else ""
    total = (max_epochs + 1) * per_epoch
    resumed = f", resumed after {done}" if done else ""
    return (
        f"training {method}{run} {', '.join(where)}; {device}: epochs 0..{max_epochs} of {per_epoch} iterations, "
        f"{total} in all{resumed}"
    )


class TrainingConsole:
    """Progress of one :class:`micd.training.loop.Trainer` run; the engine calls it around each
    epoch and iteration. ``terminal`` None: a bar when ``stream`` is a terminal."""

    def __init__(
        self,
        max_epochs: int,
        per_epoch: int,
        done: int = 0,
        stream: TextIO | None = None,
        terminal: bool | None = None,
        clock=time.monotonic,
    ) -> None:
        self.max_epochs, self.per_epoch = max_epochs, per_epoch
        self.total = (max_epochs + 1) * per_epoch
        self.stream = stream or sys.stdout
        self.terminal = self.stream.isatty() if terminal is None else terminal
        self.clock = clock
        self.every = max(1, math.ceil(self.total * LINE_SHARE))
        self.started = self.last_line = clock()
        self.started_at, self.iteration = done, done
        self.losses: list[float] = []  # since the last progress line
        self.bar = None
        self.epoch = 0
        self.epoch_started = self.started
        self.epoch_iterations, self.data_s, self.compute_s = 0, 0.0, 0.0
        self.epoch_seconds = 0.0

    def say(self, line: str) -> None:
        """A line of its own (above the bar, if one is drawn)."""
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def begin_epoch(self, epoch: int, done_in_epoch: int) -> None:
        self.epoch, self.epoch_started = epoch, self.clock()
        self.epoch_iterations, self.data_s, self.compute_s = 0, 0.0, 0.0
        if self.terminal:
            self.bar = tqdm(
                total=self.per_epoch,
                initial=done_in_epoch,
                desc=f"epoch {epoch}/{self.max_epochs}",
                file=self.stream,
                leave=False,
                dynamic_ncols=True,
                mininterval=0,  # every iteration: one takes far longer than drawing the bar
            )

    def after_iteration(self, row: dict[str, Any]) -> None:
        """Account one train_log.jsonl row; a progress line when one is due."""
        self.iteration = row["iteration"]
        self.epoch_iterations += 1
        self.data_s += row["data_s"]
        self.compute_s += row["compute_s"]
        loss = row["losses"].get("loss")
        if loss is not None:
            self.losses.append(loss)
        if self.bar is not None:
            self.bar.set_postfix(loss=loss, refresh=False)
            self.bar.update()
            return
        now = self.clock()
        if self.iteration % self.every == 0 or now - self.last_line >= LINE_SECONDS or self.iteration == self.total:
            self.say(self.progress_line(now))
            self.last_line, self.losses = now, []

    def progress_line(self, now: float) -> str:
        spent = now - self.started
        trained = self.iteration - self.started_at
        rate = trained / spent if spent > 0 else float("nan")
        left = (self.total - self.iteration) / rate if rate > 0 else float("nan")
        loss = f"loss {sum(self.losses) / len(self.losses):.4f}" if self.losses else "loss not finite"
        left_text = clock_text(left) if math.isfinite(left) else "?"
        return (
            f"iteration {self.iteration}/{self.total} ({100 * self.iteration / self.total:.0f} %), "
            f"epoch {self.epoch}/{self.max_epochs}: {loss}, {rate:.2f} it/s, "
            f"{clock_text(spent)} spent, {left_text} left"
        )

    def end_epoch(self) -> None:
        self.epoch_seconds = self.clock() - self.epoch_started
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def epoch_summary(self) -> str:
        """``17 iterations in 0:00:08, data wait 14 %`` for the epoch just trained: the share of its
        steps' time (data wait and compute, as train_log.jsonl records them) spent waiting for data."""
        stepped = self.data_s + self.compute_s
        wait = f"{100 * self.data_s / stepped:.0f} %" if stepped > 0 else "none"
        return f"{self.epoch_iterations} iterations in {clock_text(self.epoch_seconds)}, data wait {wait}"

    def epoch_line(self, epoch: int, result: str | None = None) -> None:
        """``epoch 4/8: eval mean Dice 3.21; 17 iterations in ...`` (``result`` first, if any)."""
        first = f"{result}; " if result else ""
        self.say(f"epoch {epoch}/{self.max_epochs}: {first}{self.epoch_summary()}")
