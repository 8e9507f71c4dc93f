"""Momentum (EMA) copies of modules: the MoCo / ALBEF / BLIP teacher.

    theta_m <- m * theta_m + (1 - m) * theta

The copy is a deep copy with ``requires_grad=False``. Register it as a submodule of the task (not a
plain attribute): then ``task.train()`` / ``task.eval()`` reach it, so its mode stays in sync with the
online model, its state is in every checkpoint (a resumed run continues the same teacher), and DDP
skips its parameters (they need no gradient).

``ema_update`` is called from ``Task.after_step()``, once per optimiser step, never inside forward
(torchmultimodal's ALBEF updates in forward, so gradient accumulation and evaluation passes move the
teacher too). It is one fused ``torch._foreach_lerp_`` per device/dtype group rather than a Python
loop of ``mul_``/``add_``: lerp is one kernel per group instead of two, and it leaves a value exactly
unchanged when source and target agree (``m*x + (1-m)*x`` can drift by an ulp), which matters for
float buffers that are constants (position ids, masks).

Buffers: floating-point buffers (BatchNorm running statistics, ...) are averaged like parameters, so
the teacher's statistics match its weights; integer / bool buffers (``num_batches_tracked``, ...)
cannot be averaged and are copied from the source.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

__all__ = ["MomentumCopy", "ema_update", "make_momentum_copy"]


def make_momentum_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` with every parameter frozen and the same train/eval mode."""
    twin = copy.deepcopy(module)
    twin.requires_grad_(False)
    twin.train(module.training)
    return twin


def _pairs(
    target: Iterable[tuple[str, torch.Tensor]], source: Iterable[tuple[str, torch.Tensor]], kind: str
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    target_map, source_map = dict(target), dict(source)
    if target_map.keys() != source_map.keys():
        missing = sorted(source_map.keys() - target_map.keys())[:5]
        extra = sorted(target_map.keys() - source_map.keys())[:5]
        raise ValueError(
            f"momentum copy and source have different {kind}: only in source {missing}, only in copy {extra} "
            "(pass the unwrapped modules, not DDP/torch.compile wrappers)"
        )
    pairs = []
    for name, t in target_map.items():
        s = source_map[name]
        if t.shape != s.shape:
            raise ValueError(f"{kind[:-1]} {name!r}: copy has shape {tuple(t.shape)}, source {tuple(s.shape)}")
        pairs.append((t, s))
    return pairs


@torch.no_grad()
def ema_update(target: nn.Module, source: nn.Module, momentum: float) -> None:
    """``target <- momentum * target + (1 - momentum) * source`` for parameters and float buffers.

    ``momentum=1`` keeps the target, ``momentum=0`` copies the source. Tensors are matched by name;
    a source of another dtype is cast to the target's.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    groups: dict[tuple[torch.device, torch.dtype], tuple[list[torch.Tensor], list[torch.Tensor]]] = defaultdict(
        lambda: ([], [])
    )
    pairs = _pairs(target.named_parameters(), source.named_parameters(), "parameters")
    for t, s in _pairs(target.named_buffers(), source.named_buffers(), "buffers"):
        if t.is_floating_point() or t.is_complex():
            pairs.append((t, s))
        else:
            t.copy_(s)
    for t, s in pairs:
        targets, sources = groups[(t.device, t.dtype)]
        targets.append(t)
        sources.append(s.to(device=t.device, dtype=t.dtype))
    weight = 1.0 - momentum
    for targets, sources in groups.values():
        torch._foreach_lerp_(targets, sources, weight)


class MomentumCopy(nn.Module):
    """Holds a momentum copy of ``source``; ``forward`` runs it without autograd.

    ``update(source)`` applies one EMA step (call it from ``after_step``). Other methods of the
    copy (``encode_image`` ...) are reached through ``.module``, under ``torch.no_grad()``.
    """

    def __init__(self, source: nn.Module, momentum: float = 0.995) -> None:
        super().__init__()
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        self.module = make_momentum_copy(source)
        self.momentum = momentum

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        with torch.no_grad():
            return self.module(*args, **kwargs)

    @torch.no_grad()
    def update(self, source: nn.Module) -> None:
        ema_update(self.module, source, self.momentum)

    def extra_repr(self) -> str:
        return f"momentum={self.momentum}"
