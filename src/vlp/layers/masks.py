"""Attention masks as boolean tensors (True = may attend), shaped to broadcast over heads.

Kept in one place because every fusion kind of the lecture is "the same transformer with a
different mask": bidirectional (BERT/UNITER), causal (LM decoders), seq2seq / prefix (VLP, GIT,
SimVLM PrefixLM). `scaled_dot_product_attention` takes these boolean masks directly.
"""

from __future__ import annotations

import torch


def padding_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, L] with 1 for real tokens -> [B, 1, 1, L] boolean key mask (queries see real keys only)."""
    return attention_mask.bool()[:, None, None, :]


def causal_mask(length: int, device: torch.device | None = None) -> torch.Tensor:
    """[1, 1, L, L] lower-triangular mask: position i sees positions <= i."""
    return torch.ones(length, length, dtype=torch.bool, device=device).tril()[None, None]


def seq2seq_mask(prefix_length: torch.Tensor | int, length: int, device: torch.device | None = None) -> torch.Tensor:
    """Prefix-LM mask: the first `prefix_length` positions are fully visible to everyone and see each
    other bidirectionally; later positions are causal. `prefix_length` may be per-sample ([B]).

    Returns [B or 1, 1, L, L]. Used by GIT/SimVLM/VLP (image tokens + text prefix = the prefix).
    """
    prefix = torch.as_tensor(prefix_length, device=device).reshape(-1, 1, 1)
    cols = torch.arange(length, device=device)
    rows = cols[:, None]
    visible = (cols[None, None, :] < prefix) | (cols[None, None, :] <= rows[None])
    return visible[:, None]


def combine(*masks: torch.Tensor | None) -> torch.Tensor | None:
    """Logical AND of broadcastable boolean masks, ignoring None."""
    result: torch.Tensor | None = None
    for mask in masks:
        if mask is None:
            continue
        result = mask if result is None else (result & mask)
    return result
