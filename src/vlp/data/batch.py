"""The tensors-only batch that crosses from data/ into tasks and models."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

__all__ = ["Batch"]


@dataclass
class Batch:
    """Image-text pairs. Rows are pairs; several captions of one image share its ``image_id``.

    A batch whose samples were all corrupt has 0 rows (``pixels`` is then ``[0, 3, 0, 0]``, since
    the collator never saw an image size); trainers should skip it and may report ``skipped``.
    ``to`` and ``pin_memory`` move every tensor field, so subclasses with extra tensor fields
    (MLM labels, ...) keep working.
    """

    pixels: torch.Tensor  # [B, 3, S, S] float32
    input_ids: torch.Tensor  # [B, L] long
    attention_mask: torch.Tensor  # [B, L] long, 1 = real token
    image_ids: torch.Tensor  # [B] long
    skipped: int = 0  # samples dropped from this batch because their image was corrupt

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Batch:
        """Called by ``DataLoader(pin_memory=True)``; without it the batch would stay unpinned."""
        return self._map(lambda t: t.pin_memory())

    def __len__(self) -> int:
        return int(self.image_ids.shape[0])

    def _map(self, fn) -> Batch:
        changes = {
            f.name: fn(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        return dataclasses.replace(self, **changes)
