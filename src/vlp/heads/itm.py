"""Image-text matching head: a binary matched / unmatched classifier on the fused [CLS]."""

from __future__ import annotations

import torch
from torch import nn


class ITMHead(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.classifier = nn.Linear(width, 2)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """[B, D] -> [B, 2] logits (index 1 = matched)."""
        return self.classifier(pooled)
