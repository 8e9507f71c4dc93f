"""Key/value cache for incremental (token-by-token) decoding.

Autoregressive generation recomputes nothing that cannot change: in a causal or prefix-LM stack a
position's keys and values depend only on positions it may see, all of which are already fixed.
So each self-attention layer keeps the keys/values of every position seen so far and appends the
new ones; each cross-attention layer projects the image once and reuses it.

The cache is a plain container that attention layers fill when they are handed one; a layer that
gets ``cache=None`` behaves exactly as in training, so the full-sequence path is unchanged.
Besides the per-layer tensors the cache records what the *fusion* needs to build masks for new
tokens (which cached keys are real) and what the *model* needs to embed them (the next text
position of each row); neither layers nor the fusion know about tokens or positions otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class LayerCache:
    """One attention layer's cached tensors, each [B, H, S, D/H] (None until first filled)."""

    key: torch.Tensor | None = None
    value: torch.Tensor | None = None
    cross_key: torch.Tensor | None = None
    cross_value: torch.Tensor | None = None

    def append(self, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append this step's self-attention keys/values; returns all keys/values seen so far."""
        if self.key is not None and self.value is not None:
            key = torch.cat([self.key, key], dim=2)
            value = torch.cat([self.value, value], dim=2)
        self.key, self.value = key, value
        return key, value


@dataclass
class KVCache:
    """Per-layer caches plus the bookkeeping shared by all layers of one decoding run.

    ``key_mask`` [B, S] marks which cached self-attention positions are real (padding of a prompt is
    cached but never attended); ``context_mask`` is the image key mask used by cross-attention;
    ``next_position`` [B] is the text position the next token of each row takes.
    """

    layers: list[LayerCache] = field(default_factory=list)
    key_mask: torch.Tensor | None = None
    context_mask: torch.Tensor | None = None
    next_position: torch.Tensor | None = None

    @property
    def empty(self) -> bool:
        """True before the first (prefill) pass: the fusion must then see the image."""
        return self.key_mask is None

    @property
    def length(self) -> int:
        return 0 if self.key_mask is None else self.key_mask.shape[1]

    def layer(self, index: int) -> LayerCache:
        """Cache of layer ``index`` (created on first use, so fusions need not pre-size it)."""
        while len(self.layers) <= index:
            self.layers.append(LayerCache())
        return self.layers[index]

    def span(self, start: int, count: int) -> list[LayerCache]:
        return [self.layer(index) for index in range(start, start + count)]

    def extend_keys(self, new_mask: torch.Tensor) -> torch.Tensor:
        """Record ``new_mask`` [B, L] (1 = real) for L appended positions; returns the full key mask."""
        new_mask = new_mask.bool()
        self.key_mask = new_mask if self.key_mask is None else torch.cat([self.key_mask, new_mask], dim=1)
        return self.key_mask

    def reorder(self, index: torch.Tensor, cross: bool = True) -> None:
        """Select/repeat rows (batch dim) of the cached tensors: beam expansion and reordering.

        ``cross=False`` leaves the image keys/values (and their mask) alone: beams of one image
        only trade places among themselves, where those are identical, so copying them is waste.
        """
        names = ("key", "value", "cross_key", "cross_value") if cross else ("key", "value")
        for layer in self.layers:
            for name in names:
                tensor = getattr(layer, name)
                if tensor is not None:
                    setattr(layer, name, tensor.index_select(0, index))
        for name in ("key_mask", "context_mask", "next_position") if cross else ("key_mask", "next_position"):
            tensor = getattr(self, name)
            if tensor is not None:
                setattr(self, name, tensor.index_select(0, index))
