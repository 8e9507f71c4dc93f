"""Map-style datasets over ``ImageRecord`` lists and their DataLoader collators.

Datasets return untokenised text; ``PairCollator`` tokenises the whole batch at once (one Rust
call, parallel) instead of one caption per item. A corrupt image makes its item ``None`` (logged
once per path per process) and the collator counts it in ``Batch.skipped``; nothing crashes.

Records are stored as flat numpy arrays (UTF-8 bytes + offsets), not lists of Python objects: with
forked DataLoader workers, touching Python objects bumps their reference counts and un-shares the
pages holding them, so per-worker memory grows towards a full copy of the dataset over an epoch
(see detectron2's ``NumpySerializedList``). Flat arrays stay shared.

MLM masks are drawn in the collator (``mlm_rate > 0``) by ``MLMMasker``, from a generator seeded
by a hash of (seed, the batch's token ids, its image ids): a pure function of the batch, so a
resumed run that replays the same batches gets the same masks whichever worker builds them.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from vlp.data.batch import Batch
from vlp.data.images import CorruptImageError, load_rgb
from vlp.data.masking import continuation_table, mask_tokens, special_token_ids
from vlp.data.records import ImageRecord
from vlp.data.tokenizer import TextTokenizer

__all__ = [
    "CaptionPairDataset",
    "ImageDataset",
    "PairCollator",
    "ImageCollator",
    "ImageBatch",
    "MLMMasker",
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


class MLMMasker:
    """Collate-time MLM masking (BERT 80/10/10 via ``mask_tokens``) with a per-batch explicit generator.

    The generator of each batch is seeded by a hash of ``seed``, the batch's ``input_ids`` (which
    already encode its texts, tags and truncation) and its image ids, so the masks are a pure
    function of (seed, batch content): the same on every call, in every DataLoader worker, after a
    pickling round trip and in a resumed run that replays the batches. Note the flip side: a batch
    with identical content gets identical masks in every epoch (static masking, as BERT's original
    preprocessing); with a shuffling sampler batches differ between epochs anyway, otherwise vary
    ``seed`` per epoch if fresh masks are wanted.

    Specials (``special_token_ids(tokenizer)``) and padding are never selected. ``whole_word``
    masks all pieces of a WordPiece word together (the continuation table is computed once here).
    A plain picklable object; shared by ``PairCollator`` and the region collators.
    """

    def __init__(self, tokenizer: TextTokenizer, rate: float = 0.15, whole_word: bool = False, seed: int = 0):
        if not 0.0 < rate <= 1.0:
            raise ValueError(f"MLM rate must be in (0, 1], got {rate}")
        self.rate = float(rate)
        self.whole_word = bool(whole_word)
        self.seed = int(seed)
        self.mask_id = int(tokenizer.mask_id)
        self.vocab_size = int(tokenizer.vocab_size)
        self.special_ids = special_token_ids(tokenizer)
        self._continuation = continuation_table(tokenizer) if whole_word else None

    def batch_seed(self, input_ids: torch.Tensor, image_ids: torch.Tensor) -> int:
        """The 63-bit generator seed of one batch (blake2b of seed, shapes and contents)."""
        h = hashlib.blake2b(digest_size=8)
        ids = input_ids.detach().to("cpu", torch.int64).contiguous()
        images = image_ids.detach().to("cpu", torch.int64).contiguous()
        h.update(np.asarray([self.seed, *ids.shape, images.numel()], dtype="<i8").tobytes())
        h.update(ids.numpy().astype("<i8", copy=False).tobytes())
        h.update(images.numpy().astype("<i8", copy=False).tobytes())
        return int.from_bytes(h.digest(), "little") & ((1 << 63) - 1)

    def __call__(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, image_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mlm_input_ids [B, L], mlm_labels [B, L])``; labels are -100 where nothing is predicted."""
        generator = torch.Generator().manual_seed(self.batch_seed(input_ids, image_ids))
        word_starts = None
        if self._continuation is not None:
            word_starts = ~self._continuation[input_ids]
        return mask_tokens(
            input_ids,
            attention_mask,
            mask_id=self.mask_id,
            vocab_size=self.vocab_size,
            special_ids=self.special_ids,
            generator=generator,
            rate=self.rate,
            whole_word=self.whole_word,
            word_starts=word_starts,
        )

    def fields(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, image_ids: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """``{"mlm_input_ids": ..., "mlm_labels": ...}``, to splat into ``Batch(...)``."""
        masked, labels = self(input_ids, attention_mask, image_ids)
        return {"mlm_input_ids": masked, "mlm_labels": labels}

    @staticmethod
    def empty_fields() -> dict[str, torch.Tensor]:
        """The MLM fields of a 0-row batch."""
        empty = torch.zeros((0, 0), dtype=torch.long)
        return {"mlm_input_ids": empty, "mlm_labels": empty.clone()}


class PairCollator:
    """``DataLoader`` ``collate_fn`` for ``CaptionPairDataset``: stack, tokenise, count skips.

    With ``mlm_rate > 0`` it also fills ``Batch.mlm_input_ids`` / ``mlm_labels`` (see ``MLMMasker``
    for the rules and why the masks are a pure function of ``seed`` and the batch).

    A plain class holding the tokenizer (picklable), so it works with ``num_workers > 0`` under
    both fork and spawn.
    """

    def __init__(
        self,
        tokenizer: TextTokenizer,
        max_length: int,
        mlm_rate: float = 0.0,
        whole_word: bool = False,
        seed: int = 0,
    ):
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2 to hold [CLS] and [SEP], got {max_length}")
        if mlm_rate < 0:
            raise ValueError(f"mlm_rate must be >= 0, got {mlm_rate}")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.masker = MLMMasker(tokenizer, mlm_rate, whole_word, seed) if mlm_rate > 0 else None

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
                **(self.masker.empty_fields() if self.masker is not None else {}),
            )
        input_ids, attention_mask = self.tokenizer.encode_batch(
            [it["text"] for it in kept], self.max_length
        )
        image_ids = torch.tensor([it["image_id"] for it in kept], dtype=torch.long)
        return Batch(
            pixels=_stack([it["pixels"] for it in kept]),
            input_ids=input_ids,
            attention_mask=attention_mask,
            image_ids=image_ids,
            skipped=skipped,
            **(self.masker.fields(input_ids, attention_mask, image_ids) if self.masker is not None else {}),
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
