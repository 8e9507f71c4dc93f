"""Transformer blocks shared by every encoder, fusion module and decoder.

One block class covers the two normalisation conventions of the field: pre-norm (ViT, CLIP,
GPT) and post-norm (BERT and the BERT-initialised fusion encoders of UNITER/ALBEF). An optional
cross-attention sub-layer turns the same block into an ALBEF/CoCa fusion or decoder layer.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from vlp.layers.attention import CrossAttention, SelfAttention
from vlp.layers.cache import LayerCache


def take_rows(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """[B, L, ...] -> [B, R, ...]: positions ``rows`` [B, R] (long) of each sample."""
    index = rows.reshape(rows.shape + (1,) * (x.ndim - 2))
    return torch.take_along_dim(x, index, dim=1)


def take_mask_rows(mask: torch.Tensor | None, rows: torch.Tensor) -> torch.Tensor | None:
    """Query rows ``rows`` [B, R] of an attention mask [B|1, 1, Lq, Lk] -> [B, 1, R, Lk]."""
    if mask is None:
        return None
    full = mask.expand(rows.shape[0], -1, -1, -1)
    return torch.take_along_dim(full, rows[:, None, :, None], dim=2)


class MLP(nn.Module):
    """Two-layer feed-forward network (names `fc1`/`fc2` as in timm)."""

    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.act(self.fc1(x))))


class TransformerBlock(nn.Module):
    """Self-attention (+ optional cross-attention) + MLP with residuals.

    `norm_first=True`: x + f(norm(x)) (ViT/CLIP); `norm_first=False`: norm(x + f(x)) (BERT).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        norm_first: bool = True,
        eps: float = 1e-6,
        qkv_bias: bool = True,
        dropout: float = 0.0,
        cross_attention: bool = False,
        context_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = SelfAttention(dim, num_heads, qkv_bias=qkv_bias, dropout=dropout)
        self.cross_attn: CrossAttention | None = None
        self.norm_cross: nn.LayerNorm | None = None
        if cross_attention:
            self.norm_cross = nn.LayerNorm(dim, eps=eps)
            self.cross_attn = CrossAttention(dim, num_heads, context_dim=context_dim, qkv_bias=qkv_bias, dropout=dropout)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = MLP(dim, int(dim * mlp_ratio), dropout=dropout)
        self.drop = nn.Dropout(dropout)

    def _sublayer(self, x: torch.Tensor, norm: nn.LayerNorm, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        if self.norm_first:
            return x + self.drop(fn(norm(x)))
        return norm(x + self.drop(fn(x)))

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        cache: LayerCache | None = None,
        context_index: torch.Tensor | None = None,
        rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``cache`` (incremental decoding): see `vlp.layers.cache`; ``context`` may be None once cached.
        ``context_index`` [B]: the ``context`` row ([U, N, C]) each sample reads (see `CrossAttention`).
        ``rows`` [B, R]: compute only these positions' outputs ([B, R, D]); every position still
        gives keys and values to the self-attention (a pooled read-out in the last block)."""
        if rows is None:
            x = self._sublayer(x, self.norm1, lambda h: self.attn(h, attn_mask, cache))
        else:
            if cache is not None:
                raise ValueError("rows and cache cannot be combined (incremental decoding computes every new position)")
            x = self._row_attention(x, take_mask_rows(attn_mask, rows), rows)
        if self.cross_attn is not None:
            if context is None and (cache is None or cache.cross_key is None):
                raise ValueError("this block has cross-attention and needs a context sequence")
            assert self.norm_cross is not None
            cross = self.cross_attn
            x = self._sublayer(x, self.norm_cross, lambda h: cross(h, context, context_mask, cache, context_index))
        return self._sublayer(x, self.norm2, self.mlp)

    def _row_attention(self, x: torch.Tensor, mask: torch.Tensor | None, rows: torch.Tensor) -> torch.Tensor:
        """The self-attention sub-layer at positions ``rows`` only: `_sublayer` with queries and
        residual taken at those rows (LayerNorm is per position, so norm-then-take = take-then-norm)."""
        if self.norm_first:
            h = self.norm1(x)
            return take_rows(x, rows) + self.drop(self.attn(h, mask, queries=take_rows(h, rows)))
        picked = take_rows(x, rows)
        return self.norm1(picked + self.drop(self.attn(x, mask, queries=picked)))


class Transformer(nn.Module):
    """A stack of `TransformerBlock`s with optional gradient checkpointing (memory for compute)."""

    def __init__(self, blocks: list[TransformerBlock]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.grad_checkpointing = False

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        caches: list[LayerCache] | None = None,
        context_index: torch.Tensor | None = None,
        rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``caches``: one `LayerCache` per block for incremental decoding (never checkpointed).
        ``context_index``: see `TransformerBlock`. ``rows`` [B, R]: the positions the caller reads;
        only the last block narrows to them (earlier blocks feed keys and values of every position),
        so the output is [B, R, D]."""
        if caches is not None:
            for block, cache in zip(self.blocks, caches, strict=True):
                x = block(x, attn_mask, context, context_mask, cache, context_index)
            return x
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            block_rows = rows if i == last else None
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, attn_mask, context, context_mask, None, context_index, block_rows, use_reentrant=False)
            else:
                x = block(x, attn_mask, context, context_mask, None, context_index, block_rows)
        return x
