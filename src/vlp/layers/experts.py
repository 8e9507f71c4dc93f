"""Mixture-of-modality-experts block (VLMo, Bao et al. 2022).

Self-attention is shared by all tokens; the feed-forward network is picked per token by modality:
a vision expert (V-FFN) for image tokens, a language expert (L-FFN) for text tokens and, in the
top layers of a joint pass, a vision-language expert (VL-FFN) for all tokens. Each expert has
its own LayerNorm as in VLMo's `norm2_imag` / `norm2_text` / `norm2_vl`.

Routing is by contiguous segments ``[("text", L), ("image", N)]`` rather than per-token ids: the
joint sequence is laid out modality by modality, so slicing is enough and no scatter/gather is
needed, and a token provably never touches another modality's weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from vlp.layers.attention import SelfAttention
from vlp.layers.cache import LayerCache
from vlp.layers.transformer import MLP

Segments = Sequence[tuple[str, int]]


class ModalityExpertsBlock(nn.Module):
    """Shared self-attention + one FFN expert per modality name (``experts``, e.g. image/text/vl)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        experts: Sequence[str],
        mlp_ratio: float = 4.0,
        norm_first: bool = True,
        eps: float = 1e-6,
        qkv_bias: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not experts:
            raise ValueError("at least one expert is needed")
        self.norm_first = norm_first
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = SelfAttention(dim, num_heads, qkv_bias=qkv_bias, dropout=dropout)
        self.drop = nn.Dropout(dropout)
        self.expert_norms = nn.ModuleDict({name: nn.LayerNorm(dim, eps=eps) for name in experts})
        self.experts = nn.ModuleDict({name: MLP(dim, int(dim * mlp_ratio), dropout=dropout) for name in experts})

    def _ffn(self, x: torch.Tensor, name: str) -> torch.Tensor:
        if name not in self.experts:
            raise ValueError(f"this block has no {name!r} expert (has: {list(self.experts)})")
        norm, mlp = self.expert_norms[name], self.experts[name]
        if self.norm_first:
            return x + self.drop(mlp(norm(x)))
        return norm(x + self.drop(mlp(x)))

    def forward(
        self, x: torch.Tensor, segments: Segments, attn_mask: torch.Tensor | None = None, cache: LayerCache | None = None
    ) -> torch.Tensor:
        """x: [B, sum of segment lengths, D]; ``segments`` names the expert of each contiguous run.
        ``cache``: incremental decoding (see `vlp.layers.cache`)."""
        if sum(length for _, length in segments) != x.shape[1]:
            raise ValueError(f"segments {list(segments)} do not cover {x.shape[1]} tokens")
        if self.norm_first:
            x = x + self.drop(self.attn(self.norm1(x), attn_mask, cache))
        else:
            x = self.norm1(x + self.drop(self.attn(x, attn_mask, cache)))
        parts, start = [], 0
        for name, length in segments:
            parts.append(self._ffn(x[:, start : start + length], name))
            start += length
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
