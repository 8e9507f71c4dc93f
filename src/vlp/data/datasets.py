"""Map-style datasets over ``ImageRecord`` lists and their DataLoader collators.

Datasets return untokenised text; ``PairCollator`` tokenises the whole batch at once (one Rust
call, parallel) instead of one caption per item. A corrupt image makes its item ``None`` (logged
once per path per process) and the collator counts it in ``Batch.skipped``; nothing crashes.

Records are stored as flat numpy arrays (UTF-8 bytes + offsets), not lists of Python objects: with
forked DataLoader workers, touching Python objects bumps their reference counts and un-shares the
pages holding them, so per-worker memory grows towards a full copy of the dataset over an epoch
(see detectron2's ``NumpySerializedList``). Flat arrays stay shared.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from vlp.data.batch import Batch
from vlp.data.images import CorruptImageError, load_rgb
from vlp.data.records import ImageRecord
from vlp.data.tokenizer import TextTokenizer

__all__ = [
    "CaptionPairDataset",
    "ImageDataset",
    "PairCollator",
    "ImageCollator",
    "ImageBatch",
    "captions_and_image_index",
]

logger = logging.getLogger(__name__)


class _StringTable:
    """An immutable list of strings stored as one UTF-8 byte array plus offsets."""

    def __init__(self, strings: Sequence[str]):
        encoded = [s.encode("utf-8") for s in strings]
        self._offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=self._offsets[1:])
        self._bytes = np.frombuffer(b"".join(encoded), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, i: int) -> str:
        return self._bytes[self._offsets[i] : self._offsets[i + 1]].tobytes().decode("utf-8")


class _ImageTable:
    """Paths and ids of records, plus loading with warn-once handling of corrupt files."""

    def __init__(self, records: Sequence[ImageRecord], transform: Callable[[Any], torch.Tensor]):
        self.transform = transform
        self.paths = _StringTable([os.fspath(r.path) for r in records])
        self.image_ids = np.fromiter((r.image_id for r in records), dtype=np.int64, count=len(records))
        self._warned: set[str] = set()

    def load(self, index: int) -> torch.Tensor | None:
        path = self.paths[index]
        try:
            img = load_rgb(path)
        except CorruptImageError as e:
            if path not in self._warned:
                self._warned.add(path)
                logger.warning("skipping corrupt image (reported once per path and process): %s", e)
            return None
        return self.transform(img)


class CaptionPairDataset(Dataset):
    """One item per (image, caption) pair, in record order then caption order.

    Item: ``{"pixels": Tensor [3,S,S], "text": str, "image_id": int}``, or ``None`` when the
    image file is corrupt.
    """

    def __init__(self, records: Sequence[ImageRecord], transform: Callable[[Any], torch.Tensor]):
        self._images = _ImageTable(records, transform)
        counts = np.fromiter((len(r.captions) for r in records), dtype=np.int64, count=len(records))
        self._pair_image = np.repeat(np.arange(len(records), dtype=np.int64), counts)
        self._texts = _StringTable([c for r in records for c in r.captions])

    @property
    def transform(self) -> Callable[[Any], torch.Tensor]:
        return self._images.transform

    @property
    def num_images(self) -> int:
        return len(self._images.image_ids)

    def __len__(self) -> int:
        return len(self._texts)

    def __getitem__(self, i: int) -> dict[str, Any] | None:
        i = _check_index(i, len(self))
        rec = int(self._pair_image[i])
        pixels = self._images.load(rec)
        if pixels is None:
            return None
        return {"pixels": pixels, "text": self._texts[i], "image_id": int(self._images.image_ids[rec])}


class ImageDataset(Dataset):
    """One item per image, for evaluation galleries.

    Item: ``{"pixels": Tensor [3,S,S], "image_id": int, "index": int}`` (``index`` is the position
    in ``records``, as used by ``captions_and_image_index``), or ``None`` when corrupt.
    """

    def __init__(self, records: Sequence[ImageRecord], transform: Callable[[Any], torch.Tensor]):
        self._images = _ImageTable(records, transform)

    @property
    def transform(self) -> Callable[[Any], torch.Tensor]:
        return self._images.transform

    def __len__(self) -> int:
        return len(self._images.image_ids)

    def __getitem__(self, i: int) -> dict[str, Any] | None:
        i = _check_index(i, len(self))
        pixels = self._images.load(i)
        if pixels is None:
            return None
        return {"pixels": pixels, "image_id": int(self._images.image_ids[i]), "index": i}


class PairCollator:
    """``DataLoader`` ``collate_fn`` for ``CaptionPairDataset``: stack, tokenise, count skips.

    A plain class holding the tokenizer (picklable), so it works with ``num_workers > 0`` under
    both fork and spawn.
    """

    def __init__(self, tokenizer: TextTokenizer, max_length: int):
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2 to hold [CLS] and [SEP], got {max_length}")
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, items: list[dict[str, Any] | None]) -> Batch:
        kept = [it for it in items if it is not None]
        skipped = len(items) - len(kept)
        if not kept:
            empty = torch.zeros((0, 0), dtype=torch.long)
            return Batch(
                pixels=torch.zeros((0, 3, 0, 0)),
                input_ids=empty,
                attention_mask=empty.clone(),
                image_ids=torch.zeros((0,), dtype=torch.long),
                skipped=skipped,
            )
        input_ids, attention_mask = self.tokenizer.encode_batch(
            [it["text"] for it in kept], self.max_length
        )
        return Batch(
            pixels=_stack([it["pixels"] for it in kept]),
            input_ids=input_ids,
            attention_mask=attention_mask,
            image_ids=torch.tensor([it["image_id"] for it in kept], dtype=torch.long),
            skipped=skipped,
        )


class ImageBatch(NamedTuple):
    pixels: torch.Tensor  # [B, 3, S, S]; [0, 3, 0, 0] when every image was corrupt
    image_ids: torch.Tensor  # [B] long
    skipped: int


class ImageCollator:
    """``collate_fn`` for ``ImageDataset`` -> ``ImageBatch(pixels, image_ids, skipped)``.

    A gallery image that was skipped can be found from the ids that did arrive (readers keep
    image ids unique).
    """

    def __call__(self, items: list[dict[str, Any] | None]) -> ImageBatch:
        kept = [it for it in items if it is not None]
        skipped = len(items) - len(kept)
        if not kept:
            return ImageBatch(torch.zeros((0, 3, 0, 0)), torch.zeros((0,), dtype=torch.long), skipped)
        return ImageBatch(
            _stack([it["pixels"] for it in kept]),
            torch.tensor([it["image_id"] for it in kept], dtype=torch.long),
            skipped,
        )


def captions_and_image_index(records: Sequence[ImageRecord]) -> tuple[list[str], torch.LongTensor]:
    """Flattened captions of a gallery and, per caption, the index of its image in ``records``."""
    texts = [c for r in records for c in r.captions]
    counts = torch.tensor([len(r.captions) for r in records], dtype=torch.long)
    index = torch.repeat_interleave(torch.arange(len(records), dtype=torch.long), counts)
    return texts, index


def _check_index(i: int, n: int) -> int:
    i = int(i)
    if i < 0:
        i += n
    if not 0 <= i < n:
        raise IndexError(f"index {i} out of range for dataset of length {n}")
    return i


def _stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    """``torch.stack``; inside a DataLoader worker, straight into shared memory as
    ``default_collate`` does, which saves a copy when the batch is sent to the main process."""
    if torch.utils.data.get_worker_info() is not None:
        elem = tensors[0]
        try:
            storage = elem._typed_storage()._new_shared(len(tensors) * elem.numel(), device=elem.device)
            out = elem.new(storage).resize_(len(tensors), *elem.shape)
            return torch.stack(tensors, 0, out=out)
        except (AttributeError, RuntimeError):  # private API moved, or shapes differ
            pass
    return torch.stack(tensors, 0)
