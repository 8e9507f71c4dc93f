"""Contrastive-correct gradient accumulation: cached features of every micro-batch of one step.

In-batch ITC is not a sum over samples: each row's softmax runs over every column of the batch, so
k micro-batches of B with their own losses are k small contrastive problems, not one of k*B.
open_clip's ``accum_freq`` fixes this in two passes, and so do we:

1. without gradient, embed every micro-batch (and gather it over ranks): the cache;
2. for micro-batch j, recompute its embeddings *with* gradient, put them in place of slot j of the
   cache and compute the loss of the whole k*W*B set; backward; step once after the last one.

Pass j's backward yields exactly the big-batch gradient through micro-batch j's features (row and
column roles; the cached slots are constants), so the k backwards sum to the big-batch gradient of
every encoder parameter. The logit scale, which the loss uses directly, would receive its gradient
k times: ``scale_once`` passes the value unchanged but 1/k of the gradient per pass.

Additive losses (queue ITC with momentum keys, ITM given its negatives, MLM, LM) are summed with a
share per micro-batch (``AccumulationPlan.share``), so the total equals the big-batch mean.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from vlp.objectives.gather import GatherContext
from vlp.objectives.itc import itc_loss

__all__ = ["AccumulationPlan", "MicroFeatures", "cached_itc_loss", "scale_once"]


@dataclass
class MicroFeatures:
    """What pass 1 keeps of one local micro-batch (all detached)."""

    image_ids: torch.Tensor
    image_embeds: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None
    momentum_image: torch.Tensor | None = None
    momentum_text: torch.Tensor | None = None
    tokens: dict[str, int] = field(default_factory=dict)  # objective -> predicted tokens (MLM / LM)


@dataclass
class AccumulationPlan:
    """The step's cache, rows ordered (micro-batch, rank, row); ``index`` = the micro-batch now fresh."""

    num: int
    offsets: list[int]  # row offset of micro-batch j's global block; offsets[num] = total rows
    image_ids: torch.Tensor
    image_embeds: torch.Tensor | None
    text_embeds: torch.Tensor | None
    momentum_image: torch.Tensor | None
    momentum_text: torch.Tensor | None
    shares: list[dict[str, float]]  # per micro-batch: objective -> its share of the step's mean
    index: int = 0

    def at(self, index: int) -> AccumulationPlan:
        if not 0 <= index < self.num:
            raise IndexError(f"micro-batch {index} outside 0..{self.num - 1}")
        return replace(self, index=index)

    def share(self, objective: str) -> float:
        """Token-count share for token losses (matching the big batch's token mean), else 1/k."""
        return self.shares[self.index].get(objective, 1.0 / self.num)

    def block(self) -> slice:
        return slice(self.offsets[self.index], self.offsets[self.index + 1])

    @classmethod
    def build(cls, micro: list[MicroFeatures], dist: GatherContext) -> AccumulationPlan:
        """Gather every micro-batch's features over ranks (no gradient) and concatenate them."""
        def stacked(name: str) -> torch.Tensor | None:
            parts = [getattr(m, name) for m in micro]
            if any(p is None for p in parts):
                return None
            return torch.cat([dist.gather(p) for p in parts])

        sizes = [dist.world_size * m.image_ids.shape[0] for m in micro]
        offsets = [0]
        for size in sizes:
            offsets.append(offsets[-1] + size)
        names = {name for m in micro for name in m.tokens}
        totals = {name: sum(m.tokens.get(name, 0) for m in micro) for name in names}
        shares = [{n: (m.tokens.get(n, 0) / totals[n] if totals[n] else 1.0 / len(micro)) for n in names} for m in micro]
        return cls(
            num=len(micro), offsets=offsets, image_ids=stacked("image_ids"),  # type: ignore[arg-type]
            image_embeds=stacked("image_embeds"), text_embeds=stacked("text_embeds"),
            momentum_image=stacked("momentum_image"), momentum_text=stacked("momentum_text"), shares=shares,
        )


def scale_once(scale: torch.Tensor | float, num: int) -> torch.Tensor | float:
    """Same value, 1/num of the gradient: summed over num passes the scale gets its gradient once."""
    if not isinstance(scale, torch.Tensor) or num == 1:
        return scale
    return scale.detach() + (scale - scale.detach()) / num


def cached_itc_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: torch.Tensor | float,
    plan: AccumulationPlan,
    dist: GatherContext,
    gather_with_grad: bool,
) -> torch.Tensor:
    """In-batch ITC of the whole step with this micro-batch's slot fresh (pass 2 above).

    Always the full (not local) loss: with local rows only, a cached micro-batch's gradient as a
    *column* of the fresh rows would be lost, and accumulation would no longer be exact.
    """
    if plan.image_embeds is None or plan.text_embeds is None:
        raise ValueError("the accumulation plan holds no cached ITC embeddings")
    fresh_image = dist.gather(image_embeds, with_grad=gather_with_grad)
    fresh_text = dist.gather(text_embeds, with_grad=gather_with_grad)
    block = plan.block()
    if fresh_image.shape[0] != block.stop - block.start:
        raise ValueError(f"micro-batch {plan.index} has {fresh_image.shape[0]} rows now but {block.stop - block.start} when cached")
    cached_image, cached_text = plan.image_embeds.to(fresh_image.dtype), plan.text_embeds.to(fresh_text.dtype)
    all_image = torch.cat([cached_image[: block.start], fresh_image, cached_image[block.stop :]])
    all_text = torch.cat([cached_text[: block.start], fresh_text, cached_text[block.stop :]])
    return itc_loss(all_image, all_text, scale_once(logit_scale, plan.num), plan.image_ids)
