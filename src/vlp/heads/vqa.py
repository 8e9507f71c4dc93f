"""VQA answer classifier: a two-layer MLP on the fused pooled state (BUTD / UNITER / ViLT style)."""

from __future__ import annotations

import torch
from torch import nn


class VQAHead(nn.Module):
    """``Linear(D, 2D) -> GELU -> LayerNorm -> Linear(2D, n_answers)``: one logit per candidate answer.

    The hidden layer is twice the width, as UNITER and ViLT use; the LayerNorm after the activation
    keeps the logits' scale independent of the fusion's pooled-state scale, which differs a lot
    between fusions (tanh poolers vs raw [CLS] states).
    """

    def __init__(self, width: int, num_answers: int, hidden: int | None = None) -> None:
        super().__init__()
        if width < 1 or num_answers < 1:
            raise ValueError(f"width and num_answers must be >= 1, got {width} and {num_answers}")
        hidden = 2 * width if hidden is None else hidden
        self.num_answers = num_answers
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.LayerNorm(hidden), nn.Linear(hidden, num_answers))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """[B, D] -> [B, n_answers] logits (independent sigmoids: several answers can be right)."""
        return self.mlp(pooled)
