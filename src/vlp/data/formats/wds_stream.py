"""Streaming WebDataset shards for training, with a seeded shuffle buffer and exact mid-epoch resume.

The contract (what a trainer stores in its checkpoints)
-------------------------------------------------------
Per epoch, every rank sees a fixed sequence of samples, ``epoch_order(epoch)``: a pure function of
(shard list, ``seed``, ``epoch``, ``rank``, ``world_size``, ``shuffle_buffer``). It does not depend
on ``batch_size`` or the number of DataLoader workers: workers split the sequence into batches
round-robin exactly the way ``DataLoader`` collects them (see below), so the loader yields the
sequence in order whatever ``num_workers`` is.

``state_dict()`` is ``{"epoch", "position", ...}``: ``position`` counts the samples of this rank's
epoch sequence the consumer has received (corrupt ones included). A stream that loads that state
continues with ``epoch_order(epoch)[position:]``: consumed samples are skipped by index, nothing is
read or decoded for them. The trainer either iterates ``stream.loader(...)``, which keeps
``position``/``epoch`` current itself, or tracks them (as ``Trainer`` already does with
``epoch_position += len(batch) + batch.skipped``) and calls ``set_epoch(epoch, position)``.

How the order is made
---------------------
1. The shards are permuted with a generator seeded by (seed, epoch) and their samples concatenated
   (the ``ShardIndex`` knows every shard's sample count from one pass over tar headers).
2. Rank ``r`` of ``W`` takes the contiguous slice ``[r * n, (r + 1) * n)`` with ``n = N // W``: ranks
   are disjoint, get equal counts (DDP needs the same number of steps on every rank), and each
   reads only its own shards plus at most two boundary shards it shares. Uneven shard sizes do not
   matter; the ``N % W`` (< W) samples at the end of the epoch's order are dropped, and since
   the shard order changes every epoch, different samples are dropped each epoch.
3. A shuffle buffer (``shuffle_buffer`` samples, generator seeded by (seed, epoch, rank)) mixes the
   slice as webdataset's ``shuffle`` would; it runs on sample indices, so it costs no image reads.
4. Batches: batch ``b`` is positions ``[start + b*B, start + (b+1)*B)`` of the remaining sequence;
   DataLoader worker ``w`` of ``K`` builds batches with ``b % K == w``. ``DataLoader`` (in order,
   ``batch_size=None``) takes one item from each worker in turn, so it yields batches 0, 1, 2, ...

Items are lists of per-sample dicts ``{"pixels", "text", "image_id"}`` (``None`` for an unreadable
image or a sample without captions), ready for ``PairCollator`` which counts the ``None``s as
skipped. One caption per image per epoch is drawn (a deterministic hash of seed, epoch and the sample).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from vlp.data.formats.wds import ShardIndex, expand_shards, load_meta, sample_captions
from vlp.data.images import CorruptImageError, decode_rgb
from vlp.data.readers import normalise_caption
from vlp.data.records import DataFormatError

__all__ = ["WebDatasetStream", "shuffle_buffer_order"]

_STATE_VERSION = 1


def shuffle_buffer_order(n: int, buffer: int, generator: np.random.Generator) -> np.ndarray:
    """The order in which a shuffle buffer of ``buffer`` slots emits a stream ``0..n-1``.

    Fill the buffer, then for each new element emit a uniformly chosen slot and put the element in
    its place; at the end emit what is left in random order. ``buffer <= 1`` keeps the order.
    """
    if buffer <= 1 or n <= 1:
        return np.arange(n, dtype=np.int64)
    out = np.empty(n, dtype=np.int64)
    slots = list(range(min(buffer, n)))
    picks = generator.integers(0, len(slots), size=max(n - len(slots), 0))
    k = 0
    for incoming in range(len(slots), n):
        j = int(picks[incoming - len(slots)])
        out[k] = slots[j]
        slots[j] = incoming
        k += 1
    out[k:] = generator.permutation(np.asarray(slots, dtype=np.int64))
    return out


class WebDatasetStream(IterableDataset):
    """Batches of decoded (image, caption) samples from ``.tar`` shards, for one rank.

    ``shards``: anything ``expand_shards`` accepts (brace pattern, directory, list). ``transform``
    maps a PIL RGB image to a tensor (e.g. ``ImageTransform``). No ``torch.distributed`` here: the
    trainer passes ``rank`` and ``world_size``.
    """

    def __init__(
        self,
        shards: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        transform: Callable[[Any], torch.Tensor],
        batch_size: int,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle_buffer: int = 1000,
        shuffle_shards: bool = True,
        index: ShardIndex | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer must be >= 0 (0 or 1 keeps the order), got {shuffle_buffer}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        self.index = index if index is not None else ShardIndex.build(expand_shards(shards))
        self.transform = transform
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.shuffle_buffer = shuffle_buffer
        self.shuffle_shards = shuffle_shards
        self.epoch = 0
        self.position = 0
        if len(self) == 0:
            raise DataFormatError(
                f"{len(self.index)} samples in {len(self.index.shards)} shard(s) give rank {rank} of {world_size} nothing to read"
            )

    # ------------------------------------------------------------------ order and state

    def __len__(self) -> int:
        """Samples per epoch for this rank (equal on every rank)."""
        return len(self.index) // self.world_size

    def num_batches(self, position: int | None = None) -> int:
        left = len(self) - (self.position if position is None else position)
        return -(-left // self.batch_size)

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Index rows of this rank's samples in epoch ``epoch``, in the order they are yielded."""
        counts = self.index.shard_counts
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        shard_order = np.arange(len(counts))
        if self.shuffle_shards:
            shard_order = np.random.default_rng([self.seed, epoch, 0x5EED]).permutation(len(counts))
        rows = np.concatenate([np.arange(starts[s], starts[s] + counts[s]) for s in shard_order]).astype(np.int64)
        n = len(self)
        mine = rows[self.rank * n : (self.rank + 1) * n]
        generator = np.random.default_rng([self.seed, epoch, self.rank, 0xB0FF])
        return mine[shuffle_buffer_order(n, self.shuffle_buffer, generator)]

    def set_rank(self, rank: int, world_size: int) -> None:
        """Take this process's place among ``world_size`` ranks (the trainer knows it, the builder
        of the stream does not). Changes this rank's epoch order; the position is kept."""
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if len(self.index) // world_size == 0:
            raise DataFormatError(
                f"{len(self.index)} samples in {len(self.index.shards)} shard(s) give rank {rank} of {world_size} nothing to read"
            )
        self.rank, self.world_size = int(rank), int(world_size)
        self.position = min(self.position, len(self))

    def set_epoch(self, epoch: int, position: int = 0) -> None:
        """Start the next iteration at ``position`` samples into epoch ``epoch``."""
        if not 0 <= position <= len(self):
            raise ValueError(f"position {position} outside this rank's epoch of {len(self)} samples")
        self.epoch, self.position = int(epoch), int(position)

    def state_dict(self) -> dict[str, Any]:
        """What to checkpoint: where the consumer is, plus what the order depends on (checked on load)."""
        return {
            "version": _STATE_VERSION,
            "epoch": self.epoch,
            "position": self.position,
            "seed": self.seed,
            "rank": self.rank,
            "world_size": self.world_size,
            "shuffle_buffer": self.shuffle_buffer,
            "shuffle_shards": self.shuffle_shards,
            "num_samples": len(self.index),
            "num_shards": len(self.index.shards),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue where ``state`` was taken. Refused when anything the order depends on differs:
        the skipped positions would then be other samples than those consumed."""
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"unsupported WebDatasetStream state version {state.get('version')!r}")
        mine = self.state_dict()
        different = [
            f"{k}: state has {state.get(k)!r}, stream has {mine[k]!r}"
            for k in ("seed", "rank", "world_size", "shuffle_buffer", "shuffle_shards", "num_samples", "num_shards")
            if state.get(k) != mine[k]
        ]
        if different:
            raise ValueError("cannot resume this stream from a state of a different order:\n  " + "\n  ".join(different))
        self.set_epoch(int(state["epoch"]), int(state["position"]))

    # ------------------------------------------------------------------ iteration

    def __iter__(self) -> Iterator[list[dict[str, Any] | None]]:
        """Batches of this epoch from ``position`` on, for this DataLoader worker."""
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        order = self.epoch_order(self.epoch)[self.position :]
        handles: dict[int, object] = {}
        try:
            for b in range(worker, -(-len(order) // self.batch_size), workers):
                rows = order[b * self.batch_size : (b + 1) * self.batch_size]
                yield [self._item(int(row), handles) for row in rows]
        finally:
            for f in handles.values():
                f.close()  # type: ignore[attr-defined]

    def _item(self, row: int, handles: dict[int, object]) -> dict[str, Any] | None:
        index = self.index
        where = index.where(row)
        meta = load_meta(index.read(row, "json", handles), where)
        # the .txt is only needed when the .json carries no captions (our writer's json always does)
        txt = None if meta and any(k in meta for k in ("captions", "caption", "text")) else index.read(row, "txt", handles)
        captions = [c for c in (normalise_caption(r) for r in sample_captions(txt, meta, where)) if c]
        if not captions:
            return None
        try:
            image = decode_rgb(index.read(row, "image", handles) or b"", where)
        except CorruptImageError:
            return None
        # hash() of a tuple of ints is deterministic across processes (only str/bytes hashing is
        # salted) and ~50x cheaper than building a numpy generator per sample
        pick = hash((self.seed, self.epoch, row)) % len(captions)
        image_id = meta.get("image_id", row) if meta else row
        return {"pixels": self.transform(image), "text": captions[pick], "image_id": int(image_id)}

    def loader(self, collate_fn: Callable[[list], Any] | None = None, num_workers: int = 0, **kwargs: Any) -> Iterator[Any]:
        """Iterate one epoch (from ``position``) through a ``DataLoader`` with ``num_workers``
        workers, keeping ``position`` exact as batches arrive and moving to the next epoch at the end.

        ``collate_fn`` gets each batch list (e.g. ``PairCollator``); other ``kwargs`` go to the
        ``DataLoader`` (``pin_memory``, ``prefetch_factor``...), except ``batch_size`` (set here).
        """
        start, total = self.position, len(self)
        loader = DataLoader(self, batch_size=None, num_workers=num_workers, collate_fn=collate_fn or _identity, **kwargs)
        for b, batch in enumerate(loader):
            self.position = min(start + (b + 1) * self.batch_size, total)
            yield batch
        self.epoch, self.position = self.epoch + 1, 0


def _identity(batch: list) -> list:
    return batch
