"""Single-process trainer: owns the device, precision, optimisation, checkpoints and logging.

The task (model + objectives) stays free of all of that; the trainer only calls
`task(batch) -> LossOutput` and `task.after_step()`.
"""

from __future__ import annotations

import random
import signal
import time
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from vlp.data.batch import Batch
from vlp.tasks.base import Task
from vlp.train.checkpoint import TrainerState, find_resumable, load_checkpoint, save_checkpoint
from vlp.train.config import TrainConfig
from vlp.train.logging import MetricLogger, Progress
from vlp.train.optim import build_optimizer, learning_rate, set_learning_rate
from vlp.train.sampler import ResumableRandomSampler


class TrainingInterrupted(RuntimeError):
    """Raised after SIGINT/SIGTERM once the current step has finished and a checkpoint is written."""


class NonFiniteLossError(FloatingPointError):
    pass


@dataclass
class TrainResult:
    step: int
    loss: float
    checkpoint: Path
    skipped_samples: int
    seconds: float


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


@contextmanager
def _stop_on_signal(flag: dict[str, bool]) -> Iterator[None]:
    """Turn SIGINT/SIGTERM into a flag checked between steps, so a killed run saves before exiting."""
    handled = (signal.SIGINT, signal.SIGTERM)
    try:
        previous = {s: signal.signal(s, lambda *_: flag.__setitem__("stop", True)) for s in handled}
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class Trainer:
    def __init__(
        self,
        task: Task,
        dataset: Dataset,
        collate_fn: Callable[[list[Any]], Batch],
        cfg: TrainConfig,
        run_dir: Path,
        metadata: dict[str, Any] | None = None,
        on_log: Callable[[int, dict[str, Any]], None] | None = None,
    ) -> None:
        if len(dataset) < cfg.batch_size:  # type: ignore[arg-type]
            raise ValueError(f"the training set has {len(dataset)} samples, fewer than one batch of {cfg.batch_size}")  # type: ignore[arg-type]
        self.cfg = cfg
        self.task = task
        self.dataset = dataset
        self.collate_fn = collate_fn
        self.run_dir = Path(run_dir)
        self.checkpoint_dir = self.run_dir / "checkpoints"
        self.metadata = metadata or {}
        self.on_log = on_log
        self.device = resolve_device(cfg.device)
        self.task.to(self.device)
        model = getattr(task, "model", task)
        no_decay = {f"model.{n}" for n in getattr(model, "no_weight_decay", lambda: set())()}
        self.optimizer = build_optimizer(task, cfg, no_decay)

    def _loader(self, sampler: ResumableRandomSampler) -> DataLoader:
        return DataLoader(
            self.dataset,
            batch_size=self.cfg.batch_size,
            sampler=sampler,
            collate_fn=self.collate_fn,
            num_workers=self.cfg.num_workers,
            drop_last=True,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
            # Worker seeds come from this generator, not the global RNG, so creating a loader at a
            # different moment (as a resumed run does) leaves the global RNG stream untouched.
            generator=torch.Generator().manual_seed(self.cfg.seed * 7919 + sampler.epoch),
        )

    def fit(self, resume: bool = False) -> TrainResult:
        cfg = self.cfg
        state = TrainerState()
        resumed_from: Path | None = None
        if resume:
            resumed_from = find_resumable(self.checkpoint_dir)
            if resumed_from is None:
                warnings.warn(f"--resume: no usable checkpoint under {self.checkpoint_dir}; starting from step 0", stacklevel=2)
            else:
                state = load_checkpoint(resumed_from, self.task, self.optimizer)
                print(f"[train] resumed from {resumed_from} at step {state.step}", flush=True)
        if resumed_from is None:
            seed_everything(cfg.seed)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        logger = MetricLogger(self.run_dir, resume_step=state.step if resumed_from else None, tensorboard=cfg.tensorboard)
        progress = Progress(cfg.max_steps, state.step, cfg.log_every)
        skipped = int(state.extra.get("skipped_samples", 0))
        sampler = ResumableRandomSampler(len(self.dataset), cfg.seed, state.epoch, state.epoch_position)  # type: ignore[arg-type]
        flag = {"stop": False}
        start = time.monotonic()
        window_start, window_samples = time.monotonic(), 0
        last_loss = float("nan")
        self.task.train()
        autocast_enabled = cfg.precision == "bf16"
        with _stop_on_signal(flag):
            while state.step < cfg.max_steps:
                for batch in self._loader(sampler):
                    state.epoch_position += len(batch) + batch.skipped
                    state.samples_seen += len(batch)
                    skipped += batch.skipped
                    if len(batch) < 2:  # every image of the batch was unreadable: nothing to learn from
                        continue
                    batch = batch.to(self.device, non_blocking=True)
                    lr = learning_rate(state.step, cfg)
                    set_learning_rate(self.optimizer, lr)
                    with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=autocast_enabled):
                        output = self.task(batch)
                    loss = output.loss.float()
                    if not torch.isfinite(loss):
                        raise NonFiniteLossError(f"loss became {loss.item()} at step {state.step}; last checkpoint: {self.checkpoint_dir}")
                    self.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    grad_norm = None
                    if cfg.grad_clip is not None:
                        grad_norm = torch.nn.utils.clip_grad_norm_(self.task.parameters(), cfg.grad_clip)
                    self.optimizer.step()
                    self.task.after_step()
                    state.step += 1
                    window_samples += len(batch)
                    last_loss = loss.item()
                    if state.step % cfg.log_every == 0 or state.step == cfg.max_steps:
                        now = time.monotonic()
                        values: dict[str, Any] = {
                            "epoch": state.epoch,
                            "loss": last_loss,
                            **{k: float(v) for k, v in output.losses.items()},
                            "lr": lr,
                            "samples_per_s": window_samples / max(now - window_start, 1e-9),
                            "skipped_samples": skipped,
                        }
                        if grad_norm is not None:
                            values["grad_norm"] = float(grad_norm)
                        values.update(self.task.log_values())
                        logger.log(state.step, values)
                        if self.on_log is not None:
                            self.on_log(state.step, values)
                        window_start, window_samples = now, 0
                        progress.update(state.step, {"loss": last_loss, "lr": lr, "samples/s": round(values["samples_per_s"], 1)})
                    checkpoint_due = state.step % cfg.checkpoint_every == 0 or state.step == cfg.max_steps
                    if checkpoint_due or flag["stop"]:
                        state.extra = {"skipped_samples": skipped, **self.metadata}
                        last = save_checkpoint(self.checkpoint_dir, self.task, self.optimizer, state, cfg.keep_checkpoints)
                    if flag["stop"]:
                        progress.close()
                        logger.close()
                        raise TrainingInterrupted(f"stopped at step {state.step}; checkpoint {last}; continue with --resume")
                    if state.step >= cfg.max_steps:
                        break
                else:  # the epoch ran out
                    state.epoch += 1
                    state.epoch_position = 0
                    sampler.set_epoch(state.epoch, 0)
                    if skipped:
                        warnings.warn(f"{skipped} samples skipped so far because their image could not be read", stacklevel=2)
        progress.close()
        logger.close()
        if skipped:
            print(f"[train] warning: {skipped} samples were skipped (unreadable images); see warnings above", flush=True)
        return TrainResult(
            step=state.step,
            loss=last_loss,
            checkpoint=self.checkpoint_dir / f"step_{state.step:08d}",
            skipped_samples=skipped,
            seconds=time.monotonic() - start,
        )
