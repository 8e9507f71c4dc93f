"""Data parallelism on PyTorch's own engine: DDP, or FSDP2 (``fully_shard``), and consolidated state.

The trainer calls the *engine* (the wrapped task) for forward passes and the plain task for
everything else (``after_step``, ``log_values``). Checkpoints are always consolidated: the full
state dict is gathered to rank 0 in the same safetensors layout a single process writes, so a run
saved on N ranks (DDP or FSDP) resumes or evaluates on any number of ranks, including one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import nn

from vlp.layers.experts import ModalityExpertsBlock
from vlp.layers.transformer import TransformerBlock
from vlp.train.distributed import DistributedContext

__all__ = ["Parallel"]

SHARD_UNITS = (TransformerBlock, ModalityExpertsBlock)


class Parallel:
    """How the task is replicated: "single" (one process), "ddp" or "fsdp"."""

    def __init__(self, task: nn.Module, ctx: DistributedContext, strategy: str, find_unused: bool) -> None:
        if strategy not in ("ddp", "fsdp"):
            raise ValueError(f"train.distributed must be 'ddp' or 'fsdp', got {strategy!r}")
        self.task, self.ctx = task, ctx
        self.kind = strategy if ctx.distributed else "single"
        self.engine: nn.Module = task
        self.replicated: list[nn.Parameter] = []  # FSDP: parameters left unsharded (scalars)
        if self.kind == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            # Buffers (queue, step) are kept equal by construction, so no per-forward broadcast.
            self.engine = DistributedDataParallel(
                task, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
                forward_sync_buffers=False, find_unused_parameters=find_unused,
            )
        elif self.kind == "fsdp":
            self._shard(task)

    def _shard(self, task: nn.Module) -> None:
        import torch.distributed as dist
        from torch.distributed.fsdp import fully_shard

        if getattr(task, "momentum_model", None) is not None:
            raise ValueError("train.distributed=fsdp does not support momentum models (queue / distillation) yet; use ddp")
        with torch.no_grad():  # identical start on every rank, whatever the seeding did
            for tensor in [*task.parameters(), *task.buffers()]:
                dist.broadcast(tensor.data, src=0)
        model = getattr(task, "model", task)
        units = [m for m in model.modules() if isinstance(m, SHARD_UNITS)]
        # fully_shard cannot shard 0-d parameters (the logit scale): they stay replicated, and
        # their gradients are averaged by `sync_replicated_grads`, as DDP would.
        self.replicated = [p for p in task.parameters() if p.ndim == 0]
        ignored = set(self.replicated)
        for unit in units:
            fully_shard(unit, ignored_params=ignored)
        fully_shard(task, ignored_params=ignored)
        self.shard_units = len(units)

    def sync_replicated_grads(self) -> None:
        """Average the gradients FSDP does not reduce (call once per step, after the last backward)."""
        if not self.replicated:
            return
        import torch.distributed as dist

        for param in self.replicated:
            if param.grad is None:
                param.grad = torch.zeros_like(param)
            dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)
            param.grad.div_(self.ctx.world_size)

    @contextmanager
    def no_sync(self, enabled: bool) -> Iterator[None]:
        """Skip the gradient all-reduce (DDP) / reduce-scatter (FSDP) for all but the last micro-batch."""
        if not enabled or self.kind == "single":
            with nullcontext():
                yield
            return
        if self.kind == "ddp":
            with self.engine.no_sync():  # type: ignore[operator]
                yield
            return
        self.task.set_requires_gradient_sync(False)  # type: ignore[operator]
        try:
            yield
        finally:
            self.task.set_requires_gradient_sync(True)  # type: ignore[operator]

    # ------------------------------------------------------------------ consolidated state
    def full_model_state(self) -> dict[str, torch.Tensor] | None:
        """FSDP: every rank takes part, rank 0 gets the full CPU dict (others None). Else None: the
        checkpoint writer saves the plain task directly."""
        if self.kind != "fsdp":
            return None
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(self.task, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return _unshare(state) if self.ctx.is_main else None

    def full_optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
        """FSDP: the full optimiser state keyed by parameter index, as an unsharded optimiser's."""
        if self.kind != "fsdp":
            return None
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        full = get_optimizer_state_dict(self.task, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if not self.ctx.is_main:
            return None
        index = {name: i for i, name in enumerate(self._param_names(optimizer))}
        groups = [{**g, "params": [index[name] for name in g["params"]]} for g in full["param_groups"]]
        return {"state": {index[name]: value for name, value in full["state"].items()}, "param_groups": groups}

    def _param_names(self, optimizer: torch.optim.Optimizer) -> list[str]:
        names = {id(p): n for n, p in self.task.named_parameters()}
        return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]

    def load_full_state(self, model_state: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer | None, optim_state: dict[str, Any] | None) -> None:
        """FSDP only: every rank holds the full (file) state; each keeps its shard."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_optimizer_state_dict

        options = StateDictOptions(full_state_dict=True)
        set_model_state_dict(self.task, model_state, options=options)
        if optimizer is not None and optim_state is not None:
            names = self._param_names(optimizer)
            by_name = {
                "state": {names[int(i)]: value for i, value in optim_state["state"].items()},
                "param_groups": [{**g, "params": [names[int(i)] for i in g["params"]]} for g in optim_state["param_groups"]],
            }
            set_optimizer_state_dict(self.task, optimizer, by_name, options=options)


def _unshare(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors sharing storage (tied weights): give each key its own copy.
    Loading writes the same values twice into the tied parameter, which is harmless."""
    seen: set[int] = set()
    out = {}
    for name, tensor in state.items():
        tensor = tensor.contiguous()
        pointer = tensor.untyped_storage().data_ptr()
        out[name] = tensor.clone() if pointer in seen else tensor
        seen.add(pointer)
    return out
