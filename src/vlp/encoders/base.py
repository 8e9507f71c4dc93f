"""What every image or text encoder returns and offers, whatever its architecture."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


@dataclass
class EncoderOutput:
    """Token sequence plus optional pooled vector and key mask.

    tokens: [B, N, D]; pooled: [B, D] (the [CLS] token or a mean) or None; mask: [B, N] with 1 for
    real tokens, None when every token is real (image grids).
    """

    tokens: torch.Tensor
    pooled: torch.Tensor | None = None
    mask: torch.Tensor | None = None

    def select(self, index: torch.Tensor) -> EncoderOutput:
        """Rows ``index`` of every field (pairing images with texts for ITM, repeating an image per foil)."""
        return EncoderOutput(
            tokens=self.tokens[index],
            pooled=None if self.pooled is None else self.pooled[index],
            mask=None if self.mask is None else self.mask[index],
        )


class Encoder(nn.Module):
    """Shared encoder conveniences: width, tower locking (LiT), gradient checkpointing.

    Subclasses that support partial unlocking return their parameter groups, input to output, from
    `lock_groups()` (open_clip's `lock(unlocked_groups)` semantics: the last N groups stay trainable).
    """

    width: int

    def lock_groups(self) -> list[list[nn.Module | nn.Parameter]]:
        """Parameter groups from input to output, for `lock(unlocked_groups=N)`."""
        raise NotImplementedError(f"{type(self).__name__} does not support partial unlocking")

    def lock(self, unlocked_groups: int = 0) -> None:
        """Freeze the tower (LiT), leaving the last `unlocked_groups` groups of `lock_groups()` trainable.

        BatchNorm layers whose parameters end up frozen also stop updating their running statistics
        (they stay in eval mode through `train()`), otherwise a "locked" CNN tower would still drift.
        """
        if unlocked_groups < 0:
            raise ValueError(f"unlocked_groups must be >= 0, got {unlocked_groups}")
        groups = self.lock_groups() if unlocked_groups else []
        if unlocked_groups > len(groups) and unlocked_groups:
            raise ValueError(f"unlocked_groups={unlocked_groups} but {type(self).__name__} has {len(groups)} groups")
        self.requires_grad_(False)
        for group in groups[len(groups) - unlocked_groups :]:
            for item in group:
                item.requires_grad_(True)
        freeze_batchnorm_stats(self)

    def train(self, mode: bool = True) -> Encoder:
        super().train(mode)
        for module in self.modules():
            if getattr(module, "_vlp_frozen_stats", False):
                nn.Module.train(module, False)
        return self

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        for module in self.modules():
            if hasattr(module, "grad_checkpointing"):
                module.grad_checkpointing = enabled

    def no_weight_decay(self) -> set[str]:
        """Names of parameters exempt from weight decay besides biases and norms (embeddings, tokens)."""
        return set()


def freeze_batchnorm_stats(module: nn.Module) -> None:
    """Put every BatchNorm whose parameters are all frozen into permanent eval mode (see `Encoder.train`)."""
    for child in module.modules():
        if isinstance(child, _BatchNorm) and not any(p.requires_grad for p in child.parameters()):
            child._vlp_frozen_stats = True  # type: ignore[assignment]
            nn.Module.train(child, False)


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over real tokens ([B, N, D], mask [B, N] with 1 = real) -> [B, D]; all-padding rows give 0."""
    if mask is None:
        return tokens.mean(dim=1)
    weights = mask.to(tokens.dtype)[..., None]
    return (tokens * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def last_token(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The last real token of each row ([B, N, D] -> [B, D]); the EOS of a right-padded causal text.

    Uses the highest index with mask 1 rather than `mask.sum() - 1`, so it is also right when the
    padding is on the left.
    """
    positions = torch.arange(tokens.shape[1], device=tokens.device)
    index = (mask.bool() * (positions + 1)).argmax(dim=1)  # +1: an all-padding row falls back to 0
    return tokens[torch.arange(tokens.shape[0], device=tokens.device), index]


Activation = Literal["gelu", "quick_gelu"]


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x): the GELU approximation OpenAI's CLIP was trained with.

    Its weights only reproduce CLIP's outputs under this exact function (it differs from GELU by up
    to ~0.02 per unit), so importing CLIP weights needs it as an option rather than a substitute.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


def set_mlp_activation(module: nn.Module, act: Activation) -> None:
    """Use activation `act` in every transformer MLP under `module` (the shared blocks build GELU)."""
    if act == "gelu":
        return
    if act != "quick_gelu":
        raise ValueError(f"unknown activation {act!r}: expected 'gelu' or 'quick_gelu'")
    for child in module.modules():
        if isinstance(getattr(child, "act", None), nn.GELU) and hasattr(child, "fc1"):
            child.act = QuickGELU()
