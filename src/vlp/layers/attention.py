"""Multi-head attention on `torch.nn.functional.scaled_dot_product_attention`.

SDPA picks the fused flash / memory-efficient kernel when it can, so we never materialise the
[B, H, L, L] attention matrix ourselves. Parameter names (`qkv`, `proj`) follow timm's ViT so that
weights can be copied over for parity tests without renaming gymnastics.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vlp.layers.cache import LayerCache
from vlp.layers.shared_context import shared_context_attention, worth_grouping


class SelfAttention(nn.Module):
    """Self-attention with one fused qkv projection (one matmul instead of three)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"width {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, cache: LayerCache | None = None,
        queries: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``cache``: keys/values of earlier positions; this call's are appended and attended too
        (``attn_mask`` then covers [cached; new] keys). ``queries`` [B, Lq, D]: the inputs of the
        only positions whose outputs are wanted (a pooled read-out needs one row); keys and values
        still come from every position of ``x``, ``attn_mask`` is then [B|1, 1, Lq, L] and so is
        the output's length."""
        batch, length, dim = x.shape
        if queries is None:
            # [B, L, 3D] -> 3 x [B, H, L, D/H]
            q, k, v = self.qkv(x).view(batch, length, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        else:
            q, k, v = self._split_projection(x, queries)
            length = queries.shape[1]
        if cache is not None:
            k, v = cache.append(k, v)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.proj(out.transpose(1, 2).reshape(batch, length, dim))

    def _split_projection(self, x: torch.Tensor, queries: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """q of ``queries`` alone and k, v of every position: the fused weight's slices (views)."""
        batch, length, dim = x.shape
        heads, bias = self.num_heads, self.qkv.bias
        q = F.linear(queries, self.qkv.weight[:dim], None if bias is None else bias[:dim])
        kv = F.linear(x, self.qkv.weight[dim:], None if bias is None else bias[dim:])
        k, v = kv.view(batch, length, 2, heads, dim // heads).permute(2, 0, 3, 1, 4)
        return q.view(batch, queries.shape[1], heads, dim // heads).transpose(1, 2), k, v


class CrossAttention(nn.Module):
    """Queries from one sequence, keys/values from another (text attends to image: ALBEF, CoCa)."""

    def __init__(
        self, dim: int, num_heads: int, context_dim: int | None = None, qkv_bias: bool = True, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"width {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(context_dim or dim, dim * 2, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None,
        attn_mask: torch.Tensor | None = None,
        cache: LayerCache | None = None,
        context_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``cache``: the context's keys/values are projected on the first call and reused after
        (``context`` may then be None). ``context_index`` [B]: the row of ``context`` ([U, N, C])
        each query row reads, so a context shared by many query rows (one image, many captions)
        is projected once, not once per row; ``attn_mask`` is per query row as always."""
        batch, length, dim = x.shape
        heads, head_dim = self.num_heads, dim // self.num_heads
        q = self.q(x).view(batch, length, heads, head_dim).transpose(1, 2)
        if cache is not None and cache.cross_key is not None and cache.cross_value is not None:
            k, v = cache.cross_key, cache.cross_value
        else:
            if context is None:
                raise ValueError("cross-attention needs a context sequence (or a cache that holds its keys)")
            k, v = self.kv(context).view(context.shape[0], context.shape[1], 2, heads, head_dim).permute(2, 0, 3, 1, 4)
            if context_index is not None and cache is None and worth_grouping(batch, k.shape[0]):
                dropout = self.dropout if self.training else 0.0
                out = shared_context_attention(q, k, v, attn_mask, context_index, dropout)
                return self.proj(out.transpose(1, 2).reshape(batch, length, dim))
            if context_index is not None:  # [U, H, N, d] -> [B, H, N, d]: a copy, far cheaper than the projection
                k, v = k.index_select(0, context_index), v.index_select(0, context_index)
            if cache is not None:
                cache.cross_key, cache.cross_value = k, v
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.proj(out.transpose(1, 2).reshape(batch, length, dim))
