"""Trainer settings: optimisation, precision, checkpointing and logging (nothing about the model)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class TrainConfig:
    batch_size: int = 128
    max_steps: int = 1000
    lr: float = 5e-4
    min_lr_ratio: float = 0.01  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 100
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    grad_clip: float | None = 1.0  # max global gradient norm; None disables clipping
    # auto: bf16 where the hardware runs it natively (see vlp.train.precision), else fp32; fp16: CUDA + GradScaler
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "fp32"
    device: str = "auto"  # "auto" = cuda when available, else cpu
    seed: int = 0
    num_workers: int = 1
    log_every: int = 10
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    tensorboard: bool = True  # used only if the tensorboard package is installed
    # several processes (torchrun): batch_size is per rank and per micro-batch
    distributed: Literal["ddp", "fsdp"] = "ddp"
    accum_steps: int = 1  # micro-batches per optimiser step
    accum_mode: Literal["contrastive", "naive"] = "contrastive"  # see vlp.tasks.accumulation
    compile: bool = False  # torch.compile the model's encoders/fusion; falls back to eager on failure
    debug_samples: bool = False  # write samples_rank<r>.jsonl: dataset indices of every step, per rank

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if self.max_steps < 1:
            raise ValueError("max_steps must be >= 1")
        if self.warmup_steps < 0 or self.warmup_steps > self.max_steps:
            raise ValueError("warmup_steps must be between 0 and max_steps")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError("min_lr_ratio must be in [0, 1]")
        if self.checkpoint_every < 1 or self.log_every < 1:
            raise ValueError("checkpoint_every and log_every must be >= 1")
        if self.accum_steps < 1:
            raise ValueError("accum_steps must be >= 1")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be auto, fp32, bf16 or fp16, got {self.precision!r}")
        if self.keep_checkpoints < 1:
            raise ValueError("keep_checkpoints must be >= 1")
