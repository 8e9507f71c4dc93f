"""The VQA classifier loss: binary cross-entropy against soft answer scores.

    loss = (1 / B) * sum_b sum_a BCE(sigmoid(logit[b, a]), score[b, a])

i.e. the element-wise mean times the number of answers, the scaling UNITER and ViLT use
(``binary_cross_entropy_with_logits(..., reduction="mean") * n_answers``). Summing over answers
keeps the gradient per answer independent of the vocabulary size; a plain mean over 3,129
answers would shrink it ~3,000-fold and need a matching learning-rate change. Targets are VQA
accuracies in [0, 1] (``vlp.metrics.vqa.soft_score``), not one-hot labels, so answers that only
some annotators gave are partly right, as the metric says.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["vqa_soft_loss"]


def vqa_soft_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``logits`` and ``targets`` [B, A]; mean over questions of the BCE summed over answers."""
    if logits.shape != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} differ in shape")
    if logits.shape[0] == 0:
        return logits.sum() * 0.0  # an all-corrupt batch: zero, still attached to the graph
    loss = F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="mean")
    return loss * targets.shape[1]
