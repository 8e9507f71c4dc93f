"""A shuffling sampler that can start in the middle of an epoch, for exact resume, sharded by rank.

Each epoch's order is a pure function of (seed, epoch), so a resumed run replays the same order
and skips the batches it already consumed instead of re-drawing a fresh permutation.

With several ranks the *global* permutation is cut into global batches of ``world_size *
batch_size`` and rank r takes the r-th slice of each. Global batch t on W ranks is therefore exactly
batch t of one process with a W-times larger batch (same samples, same order: rank 0's rows first),
which is what makes "2 ranks x B == 1 process x 2B" hold and keeps the queue order identical.
``start_index`` counts *global* samples consumed, so a checkpoint written by rank 0 resumes every rank.
An incomplete last global batch is dropped (as ``drop_last`` would) so all ranks take equal steps.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class ResumableRandomSampler(Sampler[int]):
    def __init__(
        self, num_samples: int, seed: int, epoch: int = 0, start_index: int = 0,
        *, rank: int = 0, world_size: int = 1, batch_size: int = 1,
    ) -> None:
        if num_samples < 1:
            raise ValueError("cannot sample from an empty dataset")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        if world_size > 1 and num_samples < world_size * batch_size:
            raise ValueError(f"{num_samples} samples are fewer than one global batch ({world_size} ranks x {batch_size})")
        if world_size > 1 and start_index % (world_size * batch_size):
            raise ValueError(f"start_index {start_index} is not a multiple of the global batch {world_size * batch_size}")
        self.num_samples = num_samples
        self.seed = seed
        self.epoch = epoch
        self.start_index = start_index
        self.rank, self.world_size, self.batch_size = rank, world_size, batch_size

    def set_epoch(self, epoch: int, start_index: int = 0) -> None:
        self.epoch = epoch
        self.start_index = start_index

    def permutation(self) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.num_samples, generator=generator)

    def _indices(self) -> torch.Tensor:
        rest = self.permutation()[self.start_index :]
        if self.world_size == 1:
            return rest
        global_batch = self.world_size * self.batch_size
        usable = (rest.numel() // global_batch) * global_batch
        blocks = rest[:usable].view(-1, self.world_size, self.batch_size)
        return blocks[:, self.rank].reshape(-1)

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices().tolist())

    def __len__(self) -> int:
        if self.world_size == 1:
            return self.num_samples - self.start_index
        global_batch = self.world_size * self.batch_size
        return ((self.num_samples - self.start_index) // global_batch) * self.batch_size
