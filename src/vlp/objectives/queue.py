"""MoCo / ALBEF feature queue: past momentum features reused as extra ITC negatives.

State only (registered buffers, no parameters), so it rides in the task's ``state_dict`` and a
resumed run continues with the same negatives. Unlike ALBEF, which starts from random unit vectors
that act as fake negatives for the first K/B steps, empty slots are marked with id ``-1`` and the
loss masks them out; with an empty queue, queue ITC is exactly in-batch ITC.

Id convention for ``id_queue``: ``>= 0`` image id, ``-1`` empty slot, ``-2`` filled but id unknown
(enqueued without ids; such entries are always negatives). Image ids must therefore be ``>= 0``.

Enqueue from ``Task.after_step()`` (never in forward: under gradient accumulation forward runs
several times per step, and evaluation must not change the queue). Under DDP, enqueue features
all-gathered from every rank: all ranks then hold the same queue, which is also what DDP's default
buffer broadcast from rank 0 would force anyway.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["FeatureQueue", "EMPTY_ID", "UNKNOWN_ID"]

EMPTY_ID = -1
UNKNOWN_ID = -2


class FeatureQueue(nn.Module):
    """Circular buffers ``image_queue [K, E]``, ``text_queue [K, E]``, ``id_queue [K]`` and ``ptr``."""

    image_queue: torch.Tensor
    text_queue: torch.Tensor
    id_queue: torch.Tensor
    ptr: torch.Tensor

    def __init__(self, size: int, dim: int, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        if size <= 0 or dim <= 0:
            raise ValueError(f"queue size and dim must be positive, got size={size}, dim={dim}")
        self.size = size
        self.dim = dim
        self.register_buffer("image_queue", torch.zeros(size, dim, dtype=dtype))
        self.register_buffer("text_queue", torch.zeros(size, dim, dtype=dtype))
        self.register_buffer("id_queue", torch.full((size,), EMPTY_ID, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def enqueue(
        self, image_feats: torch.Tensor, text_feats: torch.Tensor, image_ids: torch.Tensor | None = None
    ) -> None:
        """Write ``[n, E]`` features (detached, cast to the queue dtype) at ``ptr``, wrapping around.

        Any ``n`` works: when K is not a multiple of n the write wraps; when ``n > K`` only the last
        K rows are kept (the ones a sequential write would have left behind). The pointer stays a
        tensor, so no host synchronisation happens on GPU.
        """
        n = image_feats.shape[0]
        if text_feats.shape[0] != n or image_feats.shape[1:] != (self.dim,) or text_feats.shape[1:] != (self.dim,):
            raise ValueError(
                f"expected image/text features [n, {self.dim}], got {tuple(image_feats.shape)} and {tuple(text_feats.shape)}"
            )
        if n == 0:
            return
        if image_ids is None:
            image_ids = torch.full((n,), UNKNOWN_ID, dtype=torch.long, device=self.id_queue.device)
        elif image_ids.shape != (n,):
            raise ValueError(f"image_ids must be [{n}], got {tuple(image_ids.shape)}")
        start = self.ptr
        if n > self.size:
            start = (start + (n - self.size)) % self.size
            image_feats, text_feats, image_ids = image_feats[-self.size :], text_feats[-self.size :], image_ids[-self.size :]
            n = self.size
        index = (start + torch.arange(n, device=self.ptr.device)) % self.size
        self.image_queue.index_copy_(0, index, image_feats.detach().to(self.image_queue))
        self.text_queue.index_copy_(0, index, text_feats.detach().to(self.text_queue))
        self.id_queue.index_copy_(0, index, image_ids.detach().to(self.id_queue))
        self.ptr.copy_((start + n) % self.size)

    def filled(self) -> torch.Tensor:
        """[K] bool, True where a slot holds a feature."""
        return self.id_queue != EMPTY_ID

    @torch.no_grad()
    def reset(self) -> None:
        self.image_queue.zero_()
        self.text_queue.zero_()
        self.id_queue.fill_(EMPTY_ID)
        self.ptr.zero_()

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}"
