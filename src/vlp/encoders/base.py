"""What every image or text encoder returns and offers, whatever its architecture."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class EncoderOutput:
    """Token sequence plus optional pooled vector and key mask.

    tokens: [B, N, D]; pooled: [B, D] (the [CLS] token or a mean) or None; mask: [B, N] with 1 for
    real tokens, None when every token is real (image grids).
    """

    tokens: torch.Tensor
    pooled: torch.Tensor | None = None
    mask: torch.Tensor | None = None


class Encoder(nn.Module):
    """Shared encoder conveniences: width, tower locking (LiT), gradient checkpointing."""

    width: int

    def lock(self, unlocked_groups: int = 0) -> None:
        """Freeze all parameters (LiT-style locked tower). Partial unlocking is per encoder."""
        if unlocked_groups:
            raise NotImplementedError(f"{type(self).__name__} does not support partial unlocking")
        for param in self.parameters():
            param.requires_grad_(False)

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        for module in self.modules():
            if hasattr(module, "grad_checkpointing"):
                module.grad_checkpointing = enabled

    def no_weight_decay(self) -> set[str]:
        """Names of parameters exempt from weight decay besides biases and norms (embeddings, tokens)."""
        return set()
