"""Cross-attention of many query rows to a few shared contexts (many captions of one image).

`CrossAttention` with ``context_index`` projects each distinct context's keys/values once. The
attention itself can then either gather those keys/values per query row (a [B, H, N, d] copy and
B small attentions of L queries: 24 x 65 at blip_small, sizes where CPU kernels are least
efficient) or, because cross-attention queries never see each other, stack the rows that read one
context into one long query sequence and run one attention per distinct context over n_u * L
queries. Same numbers, fewer and larger calls: at blip_small on the 2-core CPU, with 3 distinct
images among 256 pairs, 2.3 ms instead of 4.0 ms per layer; with 32 they tie, and with every
pair distinct the Python loop loses (6.2 ms), hence `worth_grouping`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Query rows per distinct context from which one attention per context beats gathering (measured
# crossover ~8 at blip_small, see the module docstring).
MIN_ROWS_PER_CONTEXT = 8


def worth_grouping(rows: int, contexts: int) -> bool:
    """Whether ``rows`` query rows over ``contexts`` distinct contexts should be stacked per context."""
    return rows >= MIN_ROWS_PER_CONTEXT * contexts


def shared_context_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None,
    context_index: torch.Tensor, dropout_p: float = 0.0,
) -> torch.Tensor:
    """``q`` [B, H, L, d] attending to ``k``/``v`` [U, H, N, d], row b to context ``context_index[b]``;
    ``attn_mask`` per query row ([B|1, 1, L|1, N], bool or additive) or None. Returns [B, H, L, d],
    equal to attention over ``k[context_index]``."""
    batch, heads, length, head_dim = q.shape
    counts = torch.bincount(context_index, minlength=k.shape[0]).tolist()
    ordered = bool((context_index[1:] >= context_index[:-1]).all())  # image-major callers: no reordering
    order = None if ordered else torch.argsort(context_index, stable=True)
    q_sorted = q if order is None else q.index_select(0, order)
    mask_sorted = None
    if attn_mask is not None:
        mask_sorted = attn_mask.expand(batch, 1, length, attn_mask.shape[-1])
        mask_sorted = mask_sorted if order is None else mask_sorted.index_select(0, order)
    outputs, start = [], 0
    for context, rows in enumerate(counts):
        if rows == 0:
            continue
        # [n, H, L, d] -> [1, H, n*L, d]: the n rows' queries as one sequence
        group = q_sorted[start : start + rows].transpose(0, 1).reshape(1, heads, rows * length, head_dim)
        mask = None
        if mask_sorted is not None:
            mask = mask_sorted[start : start + rows].reshape(1, 1, rows * length, -1)  # [n, 1, L, N]: rows then queries
        out = F.scaled_dot_product_attention(group, k[context : context + 1], v[context : context + 1], attn_mask=mask, dropout_p=dropout_p)
        outputs.append(out.view(heads, rows, length, head_dim).transpose(0, 1))
        start += rows
    out = torch.cat(outputs)
    if order is None:
        return out
    return torch.empty_like(out).index_copy_(0, order, out)
