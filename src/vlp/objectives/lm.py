"""Language modelling (LM) and SimVLM's PrefixLM: predict the next token given the image.

    loss = -sum_i log p(y_{i+1} | I, y_j, j <= i)

The shift lives here, not in the model or the data: ``logits[:, t]`` (computed from tokens <= t)
is scored against ``input_ids[:, t + 1]``, so the model's forward stays "one output per input
position" (GIT/BLIP/CoCa decoders) and the batch keeps plain, unshifted ``input_ids``. Padding
targets are ignored through ``attention_mask``.

PrefixLM (SimVLM) splits each caption at a random point: the image and the text prefix are seen
bidirectionally, the rest is generated causally and only the rest is scored. Sequences are assumed
right-padded (real tokens first), as ``TextTokenizer`` produces them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vlp.layers.masks import seq2seq_mask
from vlp.objectives.mlm import IGNORE_INDEX, labelled_positions, token_prediction_loss

__all__ = [
    "LMLoss", "lm_labels", "lm_loss", "lm_targets", "prefix_lm_attention_mask", "prefix_lm_loss", "sample_prefix_split",
]


def lm_labels(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, prefix_lengths: torch.Tensor | None = None
) -> torch.Tensor:
    """[B, L-1] next-token targets for ``logits[:, :-1]``: token t+1, or -100 for padding / prefix.

    With ``prefix_lengths`` [B], only tokens at positions >= the row's prefix length are targets.
    """
    targets = input_ids[:, 1:]
    keep = attention_mask[:, 1:].bool()
    if prefix_lengths is not None:
        positions = torch.arange(1, input_ids.shape[1], device=input_ids.device)
        keep = keep & (positions[None, :] >= prefix_lengths.to(input_ids.device)[:, None])
    return torch.where(keep, targets, torch.full_like(targets, IGNORE_INDEX))


def lm_targets(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, prefix_lengths: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(``rows`` [B, L] bool: the positions that predict a token, the [n] tokens they predict).

    ``token_prediction_loss(model.lm_logits(out, rows), labels)`` equals ``lm_loss`` /
    ``prefix_lm_loss`` on the full logits, but projects only the n rows with a target to the
    vocabulary: never the last position, padding, or (PrefixLM) the prefix. With captions of random
    length that is about half the rows of a batch.
    """
    labels = F.pad(lm_labels(input_ids, attention_mask, prefix_lengths), (0, 1), value=IGNORE_INDEX)
    return labelled_positions(labels)


def lm_loss(
    logits: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Next-token cross-entropy of ``logits`` [B, L, V] (one per input position) for ``input_ids`` [B, L].

    The last position predicts nothing (no token after it); padded targets never count. The first
    token ([CLS]/[BOS]) is never a target: nothing precedes it.
    """
    return token_prediction_loss(logits[:, :-1], lm_labels(input_ids, attention_mask), label_smoothing)


def sample_prefix_split(
    attention_mask: torch.Tensor, generator: torch.Generator, min_prefix: int = 1
) -> torch.Tensor:
    """[B] long prefix length per row, uniform in ``[min_prefix, len - 1]`` (len = real tokens).

    At least one token is left to predict. Rows too short for that (``len <= min_prefix``) get
    ``len``: everything is prefix and the row adds nothing to the loss. ``min_prefix >= 1`` keeps the
    start token in the prefix. Drawn on the generator's device in one vectorised call.
    """
    if min_prefix < 0:
        raise ValueError(f"min_prefix must be >= 0, got {min_prefix}")
    lengths = attention_mask.long().sum(dim=1)
    choices = lengths - min_prefix  # number of legal split points
    draw = torch.rand(lengths.shape, generator=generator, device=generator.device, dtype=torch.float64)
    offset = (draw.to(lengths.device) * choices.clamp_min(1)).floor().long()
    offset = torch.minimum(offset, (choices - 1).clamp_min(0))  # guard the u -> 1 rounding edge
    return torch.where(choices > 0, min_prefix + offset, lengths)


def prefix_lm_attention_mask(
    prefix_lengths: torch.Tensor, attention_mask: torch.Tensor, num_image_tokens: int = 0
) -> torch.Tensor:
    """[B, 1, N+L, N+L] boolean mask over ``[image tokens; text]`` for PrefixLM.

    Image tokens and the first ``prefix_lengths[b]`` text tokens form a bidirectional prefix visible
    to every position; later text tokens are causal. Padded text keys are never attended.
    """
    batch, length = attention_mask.shape
    device = attention_mask.device
    structure = seq2seq_mask(prefix_lengths.to(device) + num_image_tokens, num_image_tokens + length, device=device)
    keys = torch.cat(
        [torch.ones(batch, num_image_tokens, dtype=torch.bool, device=device), attention_mask.bool()], dim=1
    )
    return structure & keys[:, None, None, :]


def prefix_lm_loss(
    logits: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    prefix_lengths: torch.Tensor,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """``lm_loss`` restricted to the tokens after each row's prefix (``logits`` are the text positions)."""
    labels = lm_labels(input_ids, attention_mask, prefix_lengths)
    return token_prediction_loss(logits[:, :-1], labels, label_smoothing)


class LMLoss(nn.Module):
    """Module wrapper of ``lm_loss`` / ``prefix_lm_loss``; no state."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(
        self,
        logits: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        prefix_lengths: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if prefix_lengths is None:
            return lm_loss(logits, input_ids, attention_mask, self.label_smoothing)
        return prefix_lm_loss(logits, input_ids, attention_mask, prefix_lengths, self.label_smoothing)
