"""A shuffling sampler that can start in the middle of an epoch, for exact resume.

Each epoch's order is a pure function of (seed, epoch), so a resumed run replays the same order
and skips the batches it already consumed instead of re-drawing a fresh permutation.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class ResumableRandomSampler(Sampler[int]):
    def __init__(self, num_samples: int, seed: int, epoch: int = 0, start_index: int = 0) -> None:
        if num_samples < 1:
            raise ValueError("cannot sample from an empty dataset")
        self.num_samples = num_samples
        self.seed = seed
        self.epoch = epoch
        self.start_index = start_index

    def set_epoch(self, epoch: int, start_index: int = 0) -> None:
        self.epoch = epoch
        self.start_index = start_index

    def permutation(self) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.num_samples, generator=generator)

    def __iter__(self) -> Iterator[int]:
        return iter(self.permutation()[self.start_index :].tolist())

    def __len__(self) -> int:
        return self.num_samples - self.start_index
