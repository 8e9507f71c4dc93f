"""Momentum distillation (ALBEF): learn from the momentum model's predictions as soft pseudo-targets.

Web captions are noisy: the word the data masked may not be the only right answer, and a caption
may fit other images too. ALBEF therefore mixes the hard targets with the momentum (EMA) model's
predicted distribution, ``loss = (1 - alpha) * hard_loss + alpha * distillation_loss``, for MLM
(this module) and ITC (``vlp.objectives.itc.itc_soft_targets``, the same mixture in target space;
cross-entropy is linear in the targets, so the two forms are equal). The teacher logits come from
``vlp.models.momentum`` and are treated as constants.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DistillationLoss", "distillation_loss"]


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor | None = None,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Soft cross-entropy ``-sum_v softmax(teacher/T)_v log softmax(student/T)_v``, averaged over positions.

    ``*_logits`` [..., V]; ``mask`` [...] bool selects the positions that count (for MLM:
    ``labels != -100``, so only masked tokens are distilled, as in ALBEF). No counted position gives
    0 rather than NaN. The result is multiplied by T^2 (Hinton et al. 2015) so gradients keep their
    scale when T changes; at T = 1 (ALBEF) it is the plain soft cross-entropy. Float32 throughout.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    vocab = student_logits.shape[-1]
    student = student_logits.reshape(-1, vocab).float() / temperature
    with torch.no_grad():
        teacher = (teacher_logits.detach().reshape(-1, vocab).float() / temperature).softmax(dim=-1)
    per_position = -(teacher * F.log_softmax(student, dim=-1)).sum(dim=-1)
    if mask is None:
        return per_position.mean() * temperature**2
    weights = mask.reshape(-1).to(per_position.dtype)
    return (per_position * weights).sum() / weights.sum().clamp_min(1.0) * temperature**2


class DistillationLoss(nn.Module):
    """Module wrapper of ``distillation_loss``; no state."""

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(
        self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return distillation_loss(student_logits, teacher_logits, mask, self.temperature)
