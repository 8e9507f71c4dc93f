"""The tensors-only batch that crosses from data/ into tasks and models."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from vlp.encoders.image.region import RegionInputs

__all__ = ["Batch"]


@dataclass
class Batch:
    """Image-text pairs. Rows are pairs; several captions of one image share its ``image_id``.

    A batch whose samples were all corrupt has 0 rows (``pixels`` is then ``[0, 3, 0, 0]``, since
    the collator never saw an image size); trainers should skip it and may report ``skipped``.
    ``to`` and ``pin_memory`` move every tensor field and every dataclass field holding tensors
    (``regions``), so subclasses with extra tensor fields keep working.

    Optional fields (None unless a collator fills them):

    * ``regions``: precomputed region features for BUTD-style models (UNITER, OSCAR, VisualBERT,
      LXMERT, VLP). Such batches carry no pixels: ``pixels`` is then an empty ``[B, 0]`` tensor,
      kept only so the field stays a tensor with the batch size as its first dimension. Read the
      image side through ``image_input``, which picks whichever is set.
    * ``token_type_ids`` [B, L]: segment ids, 1 for the OSCAR object-tag segment, 0 elsewhere.
    * ``mlm_input_ids`` [B, L] and ``mlm_labels`` [B, L]: the masked copy of ``input_ids`` and
      the original ids at predicted positions (-100 elsewhere); ``attention_mask`` applies to both.
    """

    pixels: torch.Tensor  # [B, 3, S, S] float32; [B, 0] for region batches
    input_ids: torch.Tensor  # [B, L] long
    attention_mask: torch.Tensor  # [B, L] long, 1 = real token
    image_ids: torch.Tensor  # [B] long
    skipped: int = 0  # samples dropped from this batch because their image was corrupt
    regions: RegionInputs | None = None  # features [B, R, F], boxes [B, R, 4], mask [B, R]
    token_type_ids: torch.Tensor | None = None  # [B, L] long
    mlm_input_ids: torch.Tensor | None = None  # [B, L] long
    mlm_labels: torch.Tensor | None = None  # [B, L] long, -100 where not predicted

    @property
    def image_input(self) -> torch.Tensor | RegionInputs:
        """What the image encoder takes: ``regions`` when set, else ``pixels``."""
        return self.regions if self.regions is not None else self.pixels

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Batch:
        """Called by ``DataLoader(pin_memory=True)``; without it the batch would stay unpinned."""
        return self._map(lambda t: t.pin_memory())

    def __len__(self) -> int:
        return int(self.image_ids.shape[0])

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Batch:
        changes = {
            f.name: _map_value(getattr(self, f.name), fn)
            for f in dataclasses.fields(self)
            if _holds_tensors(getattr(self, f.name))
        }
        return dataclasses.replace(self, **changes)


def _holds_tensors(value: Any) -> bool:
    return isinstance(value, torch.Tensor) or (dataclasses.is_dataclass(value) and not isinstance(value, type))


def _map_value(value: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """``fn`` on a tensor, or on every tensor field of a dataclass (recursively, e.g. ``RegionInputs``)."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    changes = {
        f.name: _map_value(getattr(value, f.name), fn)
        for f in dataclasses.fields(value)
        if _holds_tensors(getattr(value, f.name))
    }
    return dataclasses.replace(value, **changes)
