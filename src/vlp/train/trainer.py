"""The trainer: owns devices, distribution, precision, optimisation, checkpoints and logging.

The task (model + objectives) stays free of all of that; the trainer only calls
`task(batch) -> LossOutput` (through the DDP/FSDP engine) and `task.after_step()` once per optimiser
step. One process or torchrun's N (``vlp.train.distributed``): rank 0 alone logs, shows progress and
writes checkpoints (the others wait at a barrier), every rank can load them.

Gradient accumulation (``accum_steps`` micro-batches per step): ``accum_mode="contrastive"`` runs
the task's two-pass scheme (``vlp.tasks.accumulation``) when the task offers it, so in-batch ITC sees
the whole step; ``"naive"`` averages k independent micro-batch losses (k small contrastive problems).
"""

from __future__ import annotations

import dataclasses
import json
import random
import resource
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
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, IterableDataset

from vlp.data.batch import Batch
from vlp.tasks.base import Task
from vlp.train.checkpoint import (
    TrainerState, find_resumable, load_checkpoint, rank_rng_state, read_optimizer_state, restore_rank_rng,
    save_checkpoint, trainer_state, verify_checkpoint,
)
from vlp.train.config import TrainConfig
from vlp.train.distributed import DistributedContext, init_distributed
from vlp.train.logging import MetricLogger, Progress, truncate_jsonl
from vlp.train.optim import build_optimizer, learning_rate, set_learning_rate
from vlp.train.parallel import Parallel
from vlp.train.precision import resolve_precision
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


def _truncate(batch: Batch, rows: int) -> Batch:
    """The first `rows` rows (every rank must feed the collectives equally many)."""
    dropped = len(batch) - rows
    return dataclasses.replace(batch._map(lambda t: t[:rows]), skipped=batch.skipped + dropped)


def _peak_memory_mb(device: torch.device, rss_start_mb: float) -> float:
    """CUDA: peak allocated; CPU: growth of the peak resident set since the trainer started."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss_start_mb


def _compile_parts(task: Task) -> list[nn.Module]:
    """torch.compile the model's encoders, fusion and decoder in place (state-dict keys unchanged)."""
    model = getattr(task, "model", task)
    parts = [getattr(model, name, None) for name in ("image_encoder", "text_encoder", "fusion", "decoder")]
    compiled = [part for part in parts if isinstance(part, nn.Module)]
    for part in compiled:
        part.compile()
    return compiled


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
        dist: DistributedContext | None = None,
    ) -> None:
        self.dist = dist or init_distributed(cfg.device)
        # A streaming dataset (WebDatasetStream) splits the samples among ranks itself and has to be
        # told this process's rank; its len() is then per rank. A map-style one is split by the sampler.
        self.streaming = isinstance(dataset, IterableDataset)
        if self.streaming:
            dataset.set_rank(self.dist.rank, self.dist.world_size)  # type: ignore[attr-defined]
            if len(dataset) < cfg.batch_size:  # type: ignore[arg-type]
                raise ValueError(f"the stream gives each of {self.dist.world_size} rank(s) {len(dataset)} samples, fewer than one batch of {cfg.batch_size}")  # type: ignore[arg-type]
        global_batch = cfg.batch_size * self.dist.world_size
        if not self.streaming and len(dataset) < global_batch:  # type: ignore[arg-type]
            raise ValueError(f"the training set has {len(dataset)} samples, fewer than one batch of {global_batch}")  # type: ignore[arg-type]
        self.cfg = cfg
        self.task = task
        self.dataset = dataset
        self.collate_fn = collate_fn
        self.run_dir = Path(run_dir)
        self.checkpoint_dir = self.run_dir / "checkpoints"
        self.metadata = metadata or {}
        self.on_log = on_log
        self.device = self.dist.device
        self.precision = resolve_precision(cfg.precision, self.device)
        self.scaler = self.precision.grad_scaler(self.device)
        self.rss_start_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        model = getattr(task, "model", task)
        self.parameters = (sum(p.numel() for p in model.parameters()), sum(p.numel() for p in model.parameters() if p.requires_grad))
        self.task.to(self.device)
        if hasattr(task, "set_distributed"):
            task.set_distributed(self.dist.gather_context())  # type: ignore[operator]
        find_unused = not getattr(task, "uses_all_parameters", lambda: False)()
        self.parallel = Parallel(task, self.dist, cfg.distributed, find_unused)
        self.engine = self.parallel.engine
        self.compiled = _compile_parts(task) if cfg.compile else []
        no_decay = {f"model.{n}" for n in getattr(model, "no_weight_decay", lambda: set())()}
        self.optimizer = build_optimizer(task, cfg, no_decay)  # after sharding: FSDP parameters are DTensors

    def _say(self, message: str) -> None:
        if self.dist.is_main:
            print(message, flush=True)

    # ------------------------------------------------------------------ data
    def _micro_batches(self, state: TrainerState) -> Iterator[tuple[list[int], Batch]]:
        """(dataset indices, batch) for ever, keeping `state.epoch` / `epoch_position` (global) current."""
        cfg, ctx = self.cfg, self.dist
        if self.streaming:
            yield from self._stream_batches(state)
        while True:
            sampler = ResumableRandomSampler(
                len(self.dataset), cfg.seed, state.epoch, state.epoch_position,  # type: ignore[arg-type]
                rank=ctx.rank, world_size=ctx.world_size, batch_size=cfg.batch_size,
            )
            batches = BatchSampler(sampler, cfg.batch_size, drop_last=True)
            loader = DataLoader(
                self.dataset,
                batch_sampler=batches,
                collate_fn=self.collate_fn,
                num_workers=cfg.num_workers,
                pin_memory=self.device.type == "cuda",
                persistent_workers=False,
                generator=self._loader_generator(state),
            )
            for indices, batch in zip(batches, loader):  # a second pass over the sampler: same order
                state.epoch_position += ctx.world_size * cfg.batch_size
                yield indices, batch
            state.epoch += 1
            state.epoch_position = 0

    def _loader_generator(self, state: TrainerState) -> torch.Generator:
        """Worker seeds of an epoch's DataLoader come from this generator, not the global RNG, so
        creating a loader at a different moment (as a resumed run does) leaves the global RNG stream
        (dropout, masking) untouched."""
        return torch.Generator().manual_seed(self.cfg.seed * 7919 + state.epoch + 104_729 * self.dist.rank)

    def _stream_batches(self, state: TrainerState) -> Iterator[tuple[list[int], Batch]]:
        """The streaming counterpart of `_micro_batches`: (shard-index rows, batch) for ever.

        The stream restarts from `state` itself (``epoch_position // world_size`` samples of this
        rank into `state.epoch`), so a resumed run continues exactly; the final partial batch of an
        epoch is dropped like the map-style path's ``drop_last``. The rows (not the image ids, which
        repeat for several captions) name the samples for ``debug_samples``.
        """
        cfg, ctx = self.cfg, self.dist
        stream = self.dataset
        per_step = ctx.world_size * cfg.batch_size
        while True:
            position = state.epoch_position // ctx.world_size
            stream.set_epoch(state.epoch, position)  # type: ignore[attr-defined]
            order = stream.epoch_order(state.epoch)[position:]  # type: ignore[attr-defined]
            batches = len(order) // cfg.batch_size
            loader = stream.loader(  # type: ignore[attr-defined]
                self.collate_fn, cfg.num_workers, pin_memory=self.device.type == "cuda", generator=self._loader_generator(state),
            )
            try:
                for b, batch in zip(range(batches), loader):  # range first: the partial batch is never read
                    state.epoch_position += per_step
                    yield order[b * cfg.batch_size : (b + 1) * cfg.batch_size].tolist(), batch
            finally:
                loader.close()
            state.epoch += 1
            state.epoch_position = 0

    # ------------------------------------------------------------------ one optimiser step
    def _forward(self, *args: Any, **kwargs: Any) -> Any:
        with self.precision.autocast(self.device):
            try:
                return self.engine(*args, **kwargs)
            except Exception as err:  # noqa: BLE001 - any compiler failure: fall back to eager once
                if not self.compiled:
                    raise
                warnings.warn(f"torch.compile failed ({type(err).__name__}: {err}); continuing in eager mode", stacklevel=2)
                self._say(f"[train] warning: torch.compile failed ({type(err).__name__}); falling back to eager")
                for part in self.compiled:
                    part._compiled_call_impl = None  # undo nn.Module.compile()
                self.compiled = []
                return self.engine(*args, **kwargs)

    def _backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def _step(self, batches: list[Batch]) -> tuple[float, dict[str, float]]:
        """Forward/backward over the micro-batches of one step; returns (loss, named losses) of the step."""
        k = len(batches)
        plan = None
        if k > 1 and self.cfg.accum_mode == "contrastive" and getattr(self.task, "supports_accumulation", False):
            from vlp.tasks.accumulation import AccumulationPlan

            features = [self._forward(batch, features_only=True) for batch in batches]
            plan = AccumulationPlan.build(features, self.dist.gather_context())
        total = 0.0
        named: dict[str, float] = {}
        for j, batch in enumerate(batches):
            with self.parallel.no_sync(j < k - 1):
                output = self._forward(batch, plan=plan.at(j)) if plan is not None else self._forward(batch)
                weight = 1.0 if plan is not None else 1.0 / k
                self._backward(output.loss.float() * weight)
            value = output.value if output.value is not None else output.loss.detach() * weight
            total += float(value)
            for name, part in output.losses.items():
                named[name] = named.get(name, 0.0) + float(part) * weight
        return total, named

    def _optimizer_step(self) -> float | None:
        grad_norm = None
        self.parallel.sync_replicated_grads()
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.cfg.grad_clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(self.task.parameters(), self.cfg.grad_clip)
            grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        return grad_norm

    # ------------------------------------------------------------------ checkpoints
    def _save(self, state: TrainerState) -> Path:
        """Consolidated checkpoint written by rank 0; every rank takes part in the gathers, then waits."""
        ctx = self.dist
        model_state = self.parallel.full_model_state()
        optimizer_state = self.parallel.full_optimizer_state(self.optimizer)
        rngs = ctx.all_gather_object(rank_rng_state())
        data_states = ctx.all_gather_object(self.dataset.state_dict() if hasattr(self.dataset, "state_dict") else None)
        state.data_state = data_states if any(d is not None for d in data_states) else []
        path = self.checkpoint_dir / f"step_{state.step:08d}"
        if ctx.is_main:
            path = save_checkpoint(
                self.checkpoint_dir, self.task, self.optimizer, state, self.cfg.keep_checkpoints,
                model_state=model_state, optimizer_state=optimizer_state, rank_rngs=rngs if ctx.distributed else None,
            )
        ctx.barrier()
        return path

    def _load(self, path: Path) -> TrainerState:
        ctx = self.dist
        if self.parallel.kind == "fsdp":
            from safetensors.torch import load_file

            meta = verify_checkpoint(path)
            self.parallel.load_full_state(load_file(str(path / "model.safetensors")), self.optimizer, read_optimizer_state(path, meta))
            restore_rank_rng(path, meta, ctx.rank)
            state = trainer_state(meta)
        else:
            state = load_checkpoint(path, self.task, self.optimizer, rank=ctx.rank)
        if state.data_state and hasattr(self.dataset, "load_state_dict"):
            if len(state.data_state) != ctx.world_size:
                raise ValueError(f"{path} holds data states of {len(state.data_state)} ranks; this run has {ctx.world_size}")
            self.dataset.load_state_dict(state.data_state[ctx.rank])
        return state

    # ------------------------------------------------------------------ loop
    def fit(self, resume: bool = False) -> TrainResult:
        cfg, ctx = self.cfg, self.dist
        state = TrainerState()
        resumed_from: Path | None = None
        if resume:
            resumed_from = find_resumable(self.checkpoint_dir)
            if resumed_from is None:
                warnings.warn(f"--resume: no usable checkpoint under {self.checkpoint_dir}; starting from step 0", stacklevel=2)
            else:
                state = self._load(resumed_from)
                self._say(f"[train] resumed from {resumed_from} at step {state.step}")
        if resumed_from is None:
            seed_everything(cfg.seed + 1_000_003 * ctx.rank)  # own dropout / augmentation stream per rank
        self.run_dir.mkdir(parents=True, exist_ok=True)
        ctx.barrier()
        resume_step = state.step if resumed_from else None
        logger = MetricLogger(self.run_dir, resume_step=resume_step, tensorboard=cfg.tensorboard) if ctx.is_main else None
        progress = Progress(cfg.max_steps, state.step, cfg.log_every) if ctx.is_main else None
        samples_log = self.run_dir / f"samples_rank{ctx.rank}.jsonl" if cfg.debug_samples else None
        if samples_log is not None:
            truncate_jsonl(samples_log, resume_step)
        self._say(
            f"[train] {ctx.world_size} process(es), {self.parallel.kind}, device {self.device}; precision {self.precision.name} "
            f"({self.precision.reason}); parameters {self.parameters[0]:,} total, {self.parameters[1]:,} trainable; "
            f"batch {cfg.batch_size} x {ctx.world_size} ranks x {cfg.accum_steps} micro-batches ({cfg.accum_mode})"
            + ("; torch.compile on" if self.compiled else "")
        )
        skipped = int(state.extra.get("skipped_samples", 0))
        flag = {"stop": False}
        start = time.monotonic()
        window_start, window_samples = time.monotonic(), 0
        last_loss = float("nan")
        last = self.checkpoint_dir / f"step_{state.step:08d}"
        self.task.train()
        micro = self._micro_batches(state)
        try:
            with _stop_on_signal(flag):
                while state.step < cfg.max_steps:
                    batches, indices = [], []
                    for _ in range(cfg.accum_steps):
                        ids, batch = next(micro)
                        rows = int(ctx.all_reduce(len(batch), "min"))  # equal rows on every rank
                        if rows < len(batch):
                            batch = _truncate(batch, rows)
                        skipped += batch.skipped
                        state.samples_seen += len(batch) * ctx.world_size
                        if rows >= 2:  # a batch whose images were all unreadable teaches nothing
                            batches.append(batch.to(self.device, non_blocking=True))
                            indices.append(ids)
                    if not batches:
                        continue
                    lr = learning_rate(state.step, cfg)
                    set_learning_rate(self.optimizer, lr)
                    self.optimizer.zero_grad(set_to_none=True)
                    local_loss, named = self._step(batches)
                    last_loss = ctx.all_reduce(local_loss) / ctx.world_size
                    if not torch.isfinite(torch.tensor(last_loss)):
                        raise NonFiniteLossError(f"loss became {last_loss} at step {state.step}; last checkpoint: {self.checkpoint_dir}")
                    grad_norm = self._optimizer_step()
                    self.task.after_step()
                    state.step += 1
                    window_samples += sum(len(b) for b in batches) * ctx.world_size
                    if samples_log is not None:
                        with open(samples_log, "a", encoding="utf-8") as handle:
                            handle.write(json.dumps({"step": state.step, "indices": indices, "loss": last_loss}) + "\n")
                    if (state.step % cfg.log_every == 0 or state.step == cfg.max_steps) and ctx.is_main:
                        now = time.monotonic()
                        values: dict[str, Any] = {
                            "epoch": state.epoch,
                            "loss": last_loss,
                            **named,
                            "lr": lr,
                            "samples_per_s": window_samples / max(now - window_start, 1e-9),
                            "skipped_samples": skipped,
                            "peak_mem_mb": _peak_memory_mb(self.device, self.rss_start_mb),
                        }
                        if grad_norm is not None:
                            values["grad_norm"] = grad_norm
                        values.update(self.task.log_values())
                        assert logger is not None and progress is not None
                        logger.log(state.step, values)
                        if self.on_log is not None:
                            self.on_log(state.step, values)
                        window_start, window_samples = now, 0
                        progress.update(state.step, {"loss": last_loss, "lr": lr, "samples/s": round(values["samples_per_s"], 1)})
                    stop = ctx.all_reduce(float(flag["stop"]), "max") > 0  # every rank stops at the same step
                    if state.step % cfg.checkpoint_every == 0 or state.step == cfg.max_steps or stop:
                        state.extra = {"skipped_samples": skipped, **self.metadata}
                        last = self._save(state)
                    if stop:
                        raise TrainingInterrupted(f"stopped at step {state.step}; checkpoint {last}; continue with --resume")
        finally:
            if progress is not None:
                progress.close()
            if logger is not None:
                logger.close()
        self._say(f"[train] peak memory {_peak_memory_mb(self.device, self.rss_start_mb):.0f} MiB ({'CUDA allocated' if self.device.type == 'cuda' else 'CPU RSS growth'})")
        if skipped:
            self._say(f"[train] warning: {skipped} samples were skipped (unreadable images or rows trimmed to match ranks)")
        return TrainResult(
            step=state.step,
            loss=last_loss,
            checkpoint=self.checkpoint_dir / f"step_{state.step:08d}",
            skipped_samples=skipped,
            seconds=time.monotonic() - start,
        )
