"""Process-group setup from torchrun's environment, and the small context the trainer hands around.

torchrun (or any launcher) sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT. Without
them this is one process: world_size 1, no process group, and every collective below is the
identity, so single-process code paths stay free of ``torch.distributed`` entirely.

Objectives and models never see this module (architecture boundary): the trainer passes the task
only ``rank``, ``world_size`` and the gather functions (``DistributedContext.gather_context``).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field
from typing import Any

import torch

from vlp.objectives.gather import GatherContext, dist_all_gather, dist_all_gather_with_grad

__all__ = ["DistributedContext", "init_distributed", "launched_by_torchrun"]

_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def launched_by_torchrun() -> bool:
    return all(name in os.environ for name in _ENV) and int(os.environ["WORLD_SIZE"]) > 1


@dataclass
class DistributedContext:
    """rank / world size / device of this process, plus the few collectives the trainer needs."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    initialized_here: bool = False  # we created the process group, so we destroy it

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def gather_context(self) -> GatherContext:
        if not self.distributed:
            return GatherContext()
        return GatherContext(self.rank, self.world_size, dist_all_gather, dist_all_gather_with_grad)

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            if dist.get_backend() == "nccl":
                dist.barrier(device_ids=[self.device.index or 0])
            else:
                dist.barrier()

    def all_reduce(self, value: float, op: str = "sum") -> float:
        """A Python float reduced over ranks (sum / min / max); the identity for one process."""
        if not self.distributed:
            return value
        import torch.distributed as dist

        ops = {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor, op=ops[op])
        return float(tensor.item())

    def all_gather_object(self, obj: Any) -> list[Any]:
        """Small picklable values from every rank (data states, sample ids); trusted peers only."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.initialized_here:
            import torch.distributed as dist

            if dist.is_initialized():
                # A rank that tears the group down while a peer is still inside a collective aborts
                # that peer (gloo: "connection closed by peer"); wait for everyone first.
                dist.barrier()
                dist.destroy_process_group()
            self.initialized_here = False


def _device_for(requested: str, local_rank: int) -> torch.device:
    """One accelerator per process, chosen by LOCAL_RANK (never all ranks on cuda:0)."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(requested)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {requested!r} requested but CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    return device


def init_distributed(device: str = "auto", timeout_s: float = 600.0) -> DistributedContext:
    """Join the process group torchrun describes (nccl on CUDA, gloo on CPU), or stay single.

    An already initialised default group (a test that called ``init_process_group`` itself) is reused.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", rank))
        return DistributedContext(rank, world, local, _device_for(device, local))
    if not launched_by_torchrun():
        return DistributedContext(device=_device_for(device, 0))
    rank, world, local = (int(os.environ[name]) for name in _ENV)
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if name not in os.environ:
            raise RuntimeError(f"WORLD_SIZE={world} but {name} is not set; launch with torchrun")
    target = _device_for(device, local)
    backend = "nccl" if target.type == "cuda" else "gloo"
    kwargs: dict[str, Any] = {"backend": backend, "timeout": datetime.timedelta(seconds=timeout_s)}
    if backend == "nccl":
        kwargs["device_id"] = target
    dist.init_process_group(**kwargs)
    return DistributedContext(rank, world, local, target, initialized_here=True)
