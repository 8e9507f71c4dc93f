"""Cross-rank feature gathering for contrastive losses, with the collective injected from outside.

Objectives never import ``torch.distributed`` at module level (architecture boundary 2): the caller
passes ``all_gather_fn(tensor) -> list[tensor]`` (one tensor per rank, in rank order) together with
``rank`` and ``world_size``. The trainer injects ``dist_all_gather`` / ``dist_all_gather_with_grad``
below; tests inject a fake that returns per-rank tensors prepared in one process.

The two ways to gather (open_clip's ``gather_with_grad`` option):

* ``gather_with_grad=False``: the collective runs without autograd; other ranks' features are
  constants, and the local slot is replaced by the local tensor so the local features still get
  gradient both as rows and as columns of the similarity matrix. (open_clip only re-inserts the
  local slot when ``local_loss=False``; we always do, which makes the local-loss variant strictly
  closer to the exact gradient, see ``vlp.objectives.itc.gathered_itc_loss``.)
* ``gather_with_grad=True``: ``all_gather_fn`` must be differentiable
  (functional ``all_gather_single``). Its backward *sums* every rank's gradient for a rank's
  slot into that rank's input (a reduce-scatter with SUM), which is what makes the distributed
  gradient exact under DDP's gradient averaging.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "AllGatherFn", "GatherContext", "gather_tensor", "gather_features", "dist_all_gather", "dist_all_gather_with_grad",
]

AllGatherFn = Callable[[torch.Tensor], Sequence[torch.Tensor]]


@dataclass(frozen=True)
class GatherContext:
    """All a task may know about distribution: its rank, the world size, and injected gathers.

    The trainer builds it (``vlp.train.distributed``); one process is ``GatherContext()``, where
    every gather is the identity and no collective is ever called.
    """

    rank: int = 0
    world_size: int = 1
    all_gather: AllGatherFn | None = None  # no autograd: other ranks' slots are constants
    all_gather_with_grad: AllGatherFn | None = None  # backward = reduce-scatter SUM

    def gather(self, tensor: torch.Tensor, with_grad: bool = False) -> torch.Tensor:
        """``tensor`` of every rank concatenated along dim 0 (rank order); identity for one rank."""
        if self.world_size == 1:
            return tensor
        fn = self.all_gather_with_grad if with_grad else self.all_gather
        if fn is None:
            raise ValueError(f"world_size={self.world_size} but no all_gather function was injected")
        return gather_tensor(tensor, rank=self.rank, world_size=self.world_size, gather_with_grad=with_grad, all_gather_fn=fn)


def gather_tensor(
    tensor: torch.Tensor, *, rank: int, world_size: int, gather_with_grad: bool, all_gather_fn: AllGatherFn
) -> torch.Tensor:
    """Concatenate ``tensor`` from every rank along dim 0 (rank order). Same batch size on all ranks."""
    if world_size == 1:
        return tensor
    if gather_with_grad:
        parts = list(all_gather_fn(tensor))
    else:
        with torch.no_grad():
            # detach explicitly: no_grad does not detach tensors a (fake) gather returns unchanged
            parts = [p.detach() for p in all_gather_fn(tensor)]
        parts[rank] = tensor
    if len(parts) != world_size:
        raise ValueError(f"all_gather_fn returned {len(parts)} tensors for world_size={world_size}")
    return torch.cat(parts, dim=0)


def gather_features(
    image: torch.Tensor,
    text: torch.Tensor,
    *,
    rank: int,
    world_size: int,
    gather_with_grad: bool,
    all_gather_fn: AllGatherFn,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(all_image [W*B, E], all_text [W*B, E])`` gathered from every rank; identity for one rank."""
    kwargs = dict(rank=rank, world_size=world_size, gather_with_grad=gather_with_grad, all_gather_fn=all_gather_fn)
    return gather_tensor(image, **kwargs), gather_tensor(text, **kwargs)


def dist_all_gather(tensor: torch.Tensor) -> list[torch.Tensor]:
    """Real non-differentiable gather over the default process group (for ``gather_with_grad=False``)."""
    import torch.distributed as dist

    tensor = tensor.contiguous()
    out = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(out, tensor)
    return out


def dist_all_gather_with_grad(tensor: torch.Tensor) -> list[torch.Tensor]:
    """Real differentiable gather (backward = reduce-scatter SUM) for ``gather_with_grad=True``.

    Functional collectives, not ``torch.distributed.nn.all_gather``: that one is deprecated (a
    FutureWarning per call) and has the same reduce-scatter-SUM backward."""
    import torch.distributed as dist
    from torch.distributed._functional_collectives import all_gather_single, wait_tensor

    gathered = wait_tensor(all_gather_single(tensor.contiguous(), 0, dist.group.WORLD))
    return list(gathered.chunk(dist.get_world_size()))
