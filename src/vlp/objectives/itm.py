"""Image-text matching (ITM): binary matched / unmatched over fused pairs, with ITC-mined hard negatives.

    loss = -log p(yes | paired) - log p(no | unpaired)

Random negatives are too easy for a fusion encoder; ALBEF samples, for every text, a negative image
in proportion to softmax(ITC similarity) (and a negative text for every image), so confusable pairs
are seen more often. The reference implementations loop over rows calling ``torch.multinomial`` on
``softmax(sim) with the diagonal zeroed`` and crash with "invalid multinomial distribution (sum of
probabilities <= 0)" (salesforce/ALBEF#18, salesforce/BLIP#76) when fp16 similarities overflow to
inf/NaN or a row has no negative (all captions of one image). Here sampling is one vectorised
``torch.multinomial`` over the whole matrix, in float32, with explicit fallbacks, and it never raises:

* positives = every column with the same image id (captions of one image are not negatives of it);
* a row whose weights are non-finite or sum to 0 falls back to uniform over its negatives;
* a row with no negative at all (batch of 1, whole batch one image) is marked invalid
  (``valid=False``, index -1); ``build_itm_pairs`` turns its negative pairs into ignored labels.

The ITM head (Linear(width, 2)) lives in the model; this module has no parameters.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["HardNegatives", "ITMLoss", "build_itm_pairs", "itm_loss", "sample_hard_negatives", "IGNORE_INDEX"]

IGNORE_INDEX = -100


class HardNegatives(NamedTuple):
    """``neg_image_idx[i]``: negative image for text i; ``neg_text_idx[i]``: negative text for image i.

    Both are -1 where ``valid[i]`` is False (no pair in the batch shows another image than i's).
    -1 is a legal Python index, so always go through ``valid`` / ``build_itm_pairs``.
    """

    neg_image_idx: torch.Tensor  # [B] long
    neg_text_idx: torch.Tensor  # [B] long
    valid: torch.Tensor  # [B] bool


def _sample_rows(sim: torch.Tensor, negatives: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One column per row of ``sim`` [B, B], drawn from softmax over the row's negative columns."""
    logits = sim.detach().float().masked_fill(~negatives, float("-inf"))
    weights = logits.softmax(dim=-1)  # rows with NaN / +inf / all -inf come out NaN
    healthy = torch.isfinite(weights).all(dim=-1) & (weights.sum(dim=-1) > 0)
    weights = torch.where(healthy[:, None], weights, negatives.float())  # fallback: uniform over negatives
    has_negative = negatives.any(dim=-1)
    weights = torch.where(has_negative[:, None], weights, torch.ones_like(weights))  # dummy, result discarded
    # multinomial needs weights on the generator's device; a CPU generator with CUDA similarities still works
    drawn = torch.multinomial(weights.to(generator.device), 1, generator=generator).squeeze(1).to(sim.device)
    return torch.where(has_negative, drawn, torch.full_like(drawn, -1))


@torch.no_grad()
def sample_hard_negatives(
    sim_i2t: torch.Tensor, sim_t2i: torch.Tensor, image_ids: torch.Tensor, generator: torch.Generator
) -> HardNegatives:
    """Sample one hard negative image per text and one hard negative text per image.

    ``sim_i2t`` [B, B]: image i vs text j (ITC logits, already scaled); ``sim_t2i`` [B, B]: text i vs
    image j; ``image_ids`` [B]. Reproducible from ``generator`` (images for texts are drawn first,
    then texts for images). Any dtype (bf16 is computed in float32); never raises on degenerate input.
    """
    batch = image_ids.shape[0]
    if sim_i2t.shape != (batch, batch) or sim_t2i.shape != (batch, batch):
        raise ValueError(f"similarities must be [{batch}, {batch}], got {tuple(sim_i2t.shape)} and {tuple(sim_t2i.shape)}")
    ids = image_ids.to(sim_i2t.device)
    negatives = ids[:, None] != ids[None, :]  # symmetric: text i's and image i's negatives coincide
    valid = negatives.any(dim=-1)
    if batch == 0:
        empty = torch.empty(0, dtype=torch.long, device=sim_i2t.device)
        return HardNegatives(empty, empty.clone(), valid)
    neg_image_idx = _sample_rows(sim_t2i, negatives, generator)
    neg_text_idx = _sample_rows(sim_i2t, negatives, generator)
    return HardNegatives(neg_image_idx, neg_text_idx, valid)


def build_itm_pairs(
    neg_image_idx: torch.Tensor, neg_text_idx: torch.Tensor, valid: torch.Tensor, *, drop_invalid: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Index tensors for the ITM triplet, for the task to run fusion on ``(image[i], text[t])`` pairs.

    Returns ``(image_index, text_index, labels)`` in three blocks of B: positives (i, i, 1), then
    (negative image, text i, 0), then (image i, negative text, 0). Call as
    ``build_itm_pairs(*sample_hard_negatives(...))``.

    By default the shape is always 3B: an invalid row's negative pairs point at its positive pair
    and carry label ``IGNORE_INDEX`` so ``itm_loss`` skips them. That needs no host synchronisation
    and keeps shapes static; the wasted fusion rows only occur in degenerate batches.
    ``drop_invalid=True`` removes them instead (boolean indexing: one sync, shape 3B' varies).
    """
    batch = valid.shape[0]
    arange = torch.arange(batch, device=valid.device)
    neg_image = torch.where(valid, neg_image_idx, arange)
    neg_text = torch.where(valid, neg_text_idx, arange)
    neg_label = torch.where(valid, 0, IGNORE_INDEX).to(torch.long)
    image_index = torch.cat([arange, neg_image, arange])
    text_index = torch.cat([arange, arange, neg_text])
    labels = torch.cat([torch.ones_like(arange), neg_label, neg_label])
    if drop_invalid:
        keep = labels != IGNORE_INDEX
        return image_index[keep], text_index[keep], labels[keep]
    return image_index, text_index, labels


def itm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``logits`` [N, 2] (index 1 = matched) against ``labels`` [N], in float32.

    Labels equal to ``IGNORE_INDEX`` do not count; with no counted label the loss is 0 (still
    attached to the graph, so DDP sees every head parameter used) rather than NaN.
    """
    total = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="sum")
    count = (labels != IGNORE_INDEX).sum().clamp_min(1)
    return total / count


class ITMLoss(nn.Module):
    """Module wrapper of ``itm_loss``; no state."""

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return itm_loss(logits, labels)
