"""Random objective per step (UFO): one pre-training task is drawn for each iteration.

UFO trains one transformer on ITC, ITM, MLM, ... but runs only one of them per step, which keeps a
step's memory at one objective's cost. The draw uses an explicit generator: under DDP every rank
must draw the *same* objective (otherwise ranks run different graphs and collectives mismatch),
so seed the generator identically on all ranks and advance it once per step everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["pick_objective"]


def pick_objective(names: Sequence[str], probabilities: Sequence[float], generator: torch.Generator) -> str:
    """One of ``names``, drawn with the (unnormalised, non-negative) ``probabilities``."""
    if len(names) == 0 or len(names) != len(probabilities):
        raise ValueError(f"need as many probabilities as names, got {len(names)} names and {len(probabilities)}")
    weights = torch.tensor([float(p) for p in probabilities], dtype=torch.float64)
    if not torch.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"probabilities must be finite, >= 0 and not all 0, got {list(probabilities)}")
    index = torch.multinomial(weights.to(generator.device), 1, generator=generator).item()
    return names[int(index)]
