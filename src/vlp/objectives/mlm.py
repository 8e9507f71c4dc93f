"""Masked language modelling (MLM): predict the masked tokens, bidirectionally or seq2seq (VLP).

The masking itself is data's job (``vlp.data.masking.mask_tokens``); this module holds the loss and
the seq2seq attention mask of the unified VLP model (Zhou et al. 2020), which trains one
transformer for both understanding and captioning: with the seq2seq mask, a masked caption token
is predicted from the image and the *earlier* caption tokens only, which is the situation of
autoregressive decoding at captioning time (lecture: "pretrained with seq2seq attention mask in
MLM -> consistent" with captioning fine-tuning).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vlp.layers.masks import seq2seq_mask

__all__ = ["IGNORE_INDEX", "TokenPredictionLoss", "labelled_positions", "seq2seq_attention_mask", "token_prediction_loss"]

IGNORE_INDEX = -100


def token_prediction_loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy of ``logits`` [B, L, V] over the positions whose ``labels`` [B, L] != -100
    (or of [n, V] logits for [n] labels, see ``labelled_positions``).

    Only labelled positions count (unmasked tokens and padding carry -100). Computed in float32; with
    no labelled position at all the loss is 0 (attached to the graph) instead of NaN, so a batch
    without targets cannot poison training. Also used for LM after shifting (``vlp.objectives.lm``).
    """
    vocab = logits.shape[-1]
    flat_logits = logits.reshape(-1, vocab).float()
    flat_labels = labels.reshape(-1)
    total = F.cross_entropy(
        flat_logits, flat_labels, ignore_index=IGNORE_INDEX, reduction="sum", label_smoothing=label_smoothing
    )
    return total / (flat_labels != IGNORE_INDEX).sum().clamp_min(1)


def labelled_positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(``rows`` [B, L] bool: positions whose label counts, their labels [n]).

    For applying the vocabulary head to those rows only (``model.lm_logits(out, rows)``) and then
    ``token_prediction_loss(logits [n, V], labels [n])``: the same loss as full logits with -100
    labels, without projecting (and log-softmaxing) the ignored rows. On CUDA the boolean
    selection costs one host sync (its size is data-dependent).
    """
    rows = labels != IGNORE_INDEX
    return rows, labels[rows]


def seq2seq_attention_mask(
    num_image_tokens: int,
    text_attention_mask: torch.Tensor,
    image_attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """[B, 1, N+L, N+L] boolean mask (True = may attend) over the sequence ``[image tokens; text tokens]``.

    VLP's seq2seq mask: image tokens attend to image tokens only (bidirectionally); each text token
    attends to every image token, to earlier text tokens and to itself, never to a later one.
    Padded keys (``text_attention_mask == 0`` and optional ``image_attention_mask == 0``) are never
    attended. Every query row keeps at least the image tokens visible, so no row is all False
    (which would make ``scaled_dot_product_attention`` return NaN).
    """
    batch, text_len = text_attention_mask.shape
    device = text_attention_mask.device
    total = num_image_tokens + text_len
    # prefix = the image block: visible to all, bidirectional inside; text after it is causal
    structure = seq2seq_mask(num_image_tokens, total, device=device)  # [1, 1, T, T]
    if image_attention_mask is None:
        image_keys = torch.ones(batch, num_image_tokens, dtype=torch.bool, device=device)
    else:
        image_keys = image_attention_mask.bool().to(device)
    keys = torch.cat([image_keys, text_attention_mask.bool()], dim=1)  # [B, T]
    return structure & keys[:, None, None, :]


class TokenPredictionLoss(nn.Module):
    """Module wrapper of ``token_prediction_loss`` (MLM); no state."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return token_prediction_loss(logits, labels, self.label_smoothing)
