"""Multi-head attention: `torch.nn.functional.scaled_dot_product_attention`, or on CPU at short
sequences an explicit matmul-softmax-matmul (see `attend`).

SDPA picks the fused flash / memory-efficient kernel when it can, so long sequences never
materialise the [B, H, L, L] attention matrix. Parameter names (`qkv`, `proj`) follow timm's ViT so
that weights can be copied over for parity tests without renaming gymnastics.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vlp.layers.cache import LayerCache
from vlp.layers.shared_context import shared_context_attention, worth_grouping

# Most scores per head (queries x keys) for which CPU attention takes the explicit path. Measured
# with benchmarks/bench_attention.py (fp32, forward + backward, batch 32, 4 heads of 32, torch 2.14,
# 2-core AMD EPYC, load ~1): SDPA time / explicit time at 2 threads 2.0-2.5x at 40x40 (BLIP text),
# 1.3-1.5x at 65x65 (ViT, 64 px / patch 8), 1.2-1.8x at 80x80, 1.1x at 96x96, 0.96x (masked) at
# 128x128 and 0.86x at 197x197; at 1 thread 1.4-1.6x at 40, 1.1-1.2x at 65-77, 0.8-1.0x at 96. One
# query row (a KV-cached decoding step) is 0.75-0.94x at every length, so it stays on SDPA. On
# whole training steps (A/B of this switch alone) the explicit path is 5-9% faster at 2 threads
# (blip_small, clip_small, clip_tiny) and within +-2% at 1 thread.
EXPLICIT_MAX_SCORES = 80 * 80


def attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None = None, dropout_p: float = 0.0
) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + mask) v for [B, H, Lq, d] queries and [B, H, Lk, d] keys/values.

    Every attention layer calls this one function, so the kernel choice is made in one place. On
    CPU, with more than one query and at most ``EXPLICIT_MAX_SCORES`` scores per head, the explicit
    path is faster than SDPA's CPU flash kernel (which the dispatcher picks for any CPU input, and
    whose block tiling and per-block bookkeeping do not pay off on a 40x40 score matrix); everywhere
    else (CUDA, long sequences, one-query decoding steps) SDPA keeps its fused kernels and never
    materialises the score matrix.
    """
    if takes_explicit_path(q.device, q.shape[-2], k.shape[-2]):
        return explicit_attention(q, k, v, attn_mask, dropout_p)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)


def takes_explicit_path(device: torch.device, queries: int, keys: int) -> bool:
    """The routing rule of `attend` (also printed by benchmarks/bench_attention.py)."""
    return device.type == "cpu" and queries > 1 and queries * keys <= EXPLICIT_MAX_SCORES


def explicit_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None = None, dropout_p: float = 0.0
) -> torch.Tensor:
    """SDPA's semantics spelled out: boolean masks (True = attend) or additive float masks; a query
    row with no visible key returns zeros (as SDPA does), not NaN.

    The boolean mask becomes an additive one on its own small broadcast shape ([B, 1, 1, Lk] or
    [B, 1, Lq, Lk]) before it meets the [B, H, Lq, Lk] scores: one add, where ``masked_fill`` on the
    scores would cost a full extra pass (measured ~15% of this path at 40 tokens).
    """
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    empty_rows = None
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            visible_row = attn_mask.any(dim=-1, keepdim=True)
            if not bool(visible_row.all()):  # keep fully masked rows finite, zero them after softmax
                empty_rows = ~visible_row
                attn_mask = attn_mask | empty_rows
            attn_mask = torch.zeros(attn_mask.shape, dtype=scores.dtype, device=scores.device).masked_fill_(
                ~attn_mask, float("-inf")
            )
        scores = scores + attn_mask
    low_precision = scores.dtype in (torch.float16, torch.bfloat16)  # softmax in fp32 there, as SDPA does
    weights = scores.softmax(dim=-1, dtype=torch.float32 if low_precision else None).to(v.dtype)
    if empty_rows is not None:
        weights = weights.masked_fill(empty_rows, 0.0)
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
    return weights @ v


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
        out = attend(q, k, v, attn_mask, self.dropout if self.training else 0.0)
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
        out = attend(q, k, v, attn_mask, self.dropout if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(batch, length, dim))
