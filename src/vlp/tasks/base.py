"""The task contract: model + objectives -> named losses; state changes only in `after_step`."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from vlp.data.batch import Batch


@dataclass
class LossOutput:
    """`loss` is what the trainer back-propagates; `losses` are the named parts (already weighted).

    `value`, when set, is the number to log instead of `loss`: under contrastive gradient
    accumulation the back-propagated objective of one micro-batch is not its share of the step loss.
    """

    loss: torch.Tensor
    losses: dict[str, torch.Tensor] = field(default_factory=dict)
    value: torch.Tensor | None = None


class Task(nn.Module):
    """Owns a model and its objectives. Subclasses define the batch contract and the loss mix."""

    model: nn.Module

    def forward(self, batch: Batch) -> LossOutput:  # pragma: no cover - interface
        raise NotImplementedError

    @torch.no_grad()
    def log_values(self) -> dict[str, float]:
        """Extra scalars worth logging with the losses (temperature, queue fill...)."""
        return {}

    @torch.no_grad()
    def after_step(self) -> None:
        """Called once after each optimiser step (EMA updates, queue enqueues). Never in forward,
        so gradient accumulation and evaluation cannot disturb momentum state."""
