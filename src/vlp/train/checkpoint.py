"""Atomic, verifiable checkpoints in safetensors + JSON: never pickle.

Layout of one checkpoint directory (`run/checkpoints/step_00000500/`):
  model.safetensors      the task's state dict (model, and momentum copies/queues when a task has them)
  optimizer.safetensors  every tensor of the optimiser state, flattened as `state.<param>.<name>`
  rng.safetensors        torch CPU (and CUDA) generator states
  state.json             step, epoch, position in epoch, python/numpy RNG, optimiser hyper-parameters,
                         sha256 of each file above, and any extra metadata (resolved config)
Several ranks: rank 0 writes the consolidated state (the same files, loadable into any world size);
every rank's RNG states are gathered into it (``torch_cpu_rank<r>`` / ``rng_ranks``), and
``data_state`` holds one JSON value per rank for data readers with their own position
(``state_dict()`` / ``load_state_dict()``, e.g. streaming readers); map-style datasets need none,
their position is ``epoch`` / ``epoch_position`` (global samples consumed).
A checkpoint is written into a temporary directory, fsynced, then renamed into place (atomic on
POSIX); `run/checkpoints/latest` is replaced atomically afterwards. A checkpoint killed half-way is
therefore never visible, and a truncated or altered file is caught by its hash on load.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

LATEST = "latest"
FILES = ("model.safetensors", "optimizer.safetensors", "rng.safetensors")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated, altered, or does not fit the model."""


@dataclass
class TrainerState:
    step: int = 0  # optimiser steps completed
    epoch: int = 0
    epoch_position: int = 0  # samples of `epoch` already consumed (its order is fixed by the seed)
    samples_seen: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    data_state: list[Any] = field(default_factory=list)  # one JSON value per rank (may be empty)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _flatten_optimizer(optimizer: torch.optim.Optimizer, state_dict: dict[str, Any] | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state_dict = state_dict if state_dict is not None else optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param_id, param_state in state_dict["state"].items():
        for name, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{param_id}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(param_id), {})[name] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, param_id, name = key.split(".", 2)
        state.setdefault(int(param_id), {})[name] = value
    for param_id, values in meta.get("scalars", {}).items():
        state.setdefault(int(param_id), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def rank_rng_state() -> tuple[torch.Tensor, dict[str, Any]]:
    """This process's torch CPU and python/numpy RNG states, to gather from every rank."""
    return torch.get_rng_state(), _python_rng()


def _rng_tensors() -> dict[str, torch.Tensor]:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for index, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{index}"] = cuda_state
    return tensors


def _python_rng() -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    return {
        "python": [version, list(internal), gauss],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }


def _restore_rng(tensors: dict[str, torch.Tensor], states: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    if torch.cuda.is_available():
        cuda = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda_")]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def save_checkpoint(
    directory: Path, module: nn.Module, optimizer: torch.optim.Optimizer, state: TrainerState, keep: int = 2,
    *, model_state: dict[str, torch.Tensor] | None = None, optimizer_state: dict[str, Any] | None = None,
    rank_rngs: list[tuple[torch.Tensor, dict[str, Any]]] | None = None,
) -> Path:
    """Write `directory/step_XXXXXXXX` atomically, point `latest` at it, prune old ones; return its path.

    `model_state` / `optimizer_state`: already consolidated state (FSDP) to write instead of the
    module's and optimiser's own; `rank_rngs`: every rank's RNG states (rank order).
    """
    directory.mkdir(parents=True, exist_ok=True)
    name = f"step_{state.step:08d}"
    final = directory / name
    tmp = directory / f".{name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    if model_state is None:
        save_model(module, str(tmp / "model.safetensors"))  # handles tied (shared) weights
    else:
        save_file(model_state, str(tmp / "model.safetensors"))
    opt_tensors, opt_meta = _flatten_optimizer(optimizer, optimizer_state)
    save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
    rng = _rng_tensors()
    for rank, (torch_state, _) in enumerate(rank_rngs or []):
        rng[f"torch_cpu_rank{rank}"] = torch_state
    save_file(rng, str(tmp / "rng.safetensors"))
    meta = {
        "format": "vlp-checkpoint-1",
        "step": state.step,
        "epoch": state.epoch,
        "epoch_position": state.epoch_position,
        "samples_seen": state.samples_seen,
        "rng": _python_rng(),
        "optimizer": opt_meta,
        "sha256": {f: _sha256(tmp / f) for f in FILES},
        "extra": state.extra,
        "data_state": state.data_state,
        "rng_ranks": [python_rng for _, python_rng in rank_rngs or []],
    }
    for f in FILES:
        with open(tmp / f, "rb+") as handle:
            os.fsync(handle.fileno())
    write_text_atomic(tmp / "state.json", json.dumps(meta))
    _fsync_dir(tmp)
    if final.exists():  # re-saving a step (e.g. after resume): move the old one aside first
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(directory)
    write_text_atomic(directory / LATEST, name + "\n")
    _prune(directory, keep)
    return final


def _prune(directory: Path, keep: int) -> None:
    checkpoints = sorted(p for p in directory.glob("step_*") if p.is_dir())
    for old in checkpoints[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def verify_checkpoint(path: Path) -> dict[str, Any]:
    """Return the parsed state.json after checking every file against its recorded hash."""
    state_file = path / "state.json"
    if not state_file.is_file():
        raise CheckpointError(f"{path} is not a complete checkpoint (no state.json)")
    try:
        meta = json.loads(state_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{state_file} is corrupt: {err}") from err
    if meta.get("format") != "vlp-checkpoint-1":
        raise CheckpointError(f"{path}: unknown checkpoint format {meta.get('format')!r}")
    for name, expected in meta["sha256"].items():
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"{path}: missing {name}")
        if _sha256(file) != expected:
            raise CheckpointError(f"{file} is truncated or altered (sha256 mismatch); it cannot be resumed from")
    return meta


def find_resumable(directory: Path) -> Path | None:
    """The newest checkpoint that verifies, preferring the one `latest` names. Corrupt ones are
    reported and skipped so a damaged last checkpoint costs one interval of work, not the run."""
    import warnings

    candidates = sorted((p for p in directory.glob("step_*") if p.is_dir()), reverse=True)
    latest = directory / LATEST
    if latest.is_file():
        named = directory / latest.read_text(encoding="utf-8").strip()
        if named in candidates:
            candidates.remove(named)
            candidates.insert(0, named)
    for candidate in candidates:
        try:
            verify_checkpoint(candidate)
            return candidate
        except CheckpointError as err:
            warnings.warn(f"skipping unusable checkpoint: {err}", stacklevel=2)
    return None


def load_model_weights(path: Path, module: nn.Module, verify: bool = True) -> None:
    """Load only the weights (for evaluation / fine-tuning). `path` is a checkpoint directory."""
    if verify:
        verify_checkpoint(path)
    try:
        missing, unexpected = load_model(module, str(path / "model.safetensors"), strict=False)
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"cannot read {path / 'model.safetensors'}: {err}") from err
    except RuntimeError as err:  # shape mismatch
        raise CheckpointError(f"{path} does not fit this model: {err}") from err
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not fit this model: missing keys {sorted(missing)[:5]}, unexpected keys {sorted(unexpected)[:5]}"
        )


def read_optimizer_state(path: Path, meta: dict[str, Any]) -> dict[str, Any]:
    return _unflatten_optimizer(load_file(str(path / "optimizer.safetensors")), meta["optimizer"])


def restore_rank_rng(path: Path, meta: dict[str, Any], rank: int = 0) -> None:
    """Every RNG of this rank as saved; a rank the saving run did not have gets rank 0's states."""
    tensors = load_file(str(path / "rng.safetensors"))
    python = meta["rng"]
    ranks = meta.get("rng_ranks") or []
    if rank < len(ranks) and f"torch_cpu_rank{rank}" in tensors:
        tensors["torch_cpu"], python = tensors[f"torch_cpu_rank{rank}"], ranks[rank]
    _restore_rng(tensors, python)


def trainer_state(meta: dict[str, Any]) -> TrainerState:
    return TrainerState(
        step=meta["step"],
        epoch=meta["epoch"],
        epoch_position=meta["epoch_position"],
        samples_seen=meta["samples_seen"],
        extra=meta.get("extra", {}),
        data_state=meta.get("data_state", []),
    )


def load_checkpoint(path: Path, module: nn.Module, optimizer: torch.optim.Optimizer, rank: int = 0) -> TrainerState:
    """Restore weights, optimiser state and every RNG; return the trainer position to continue from."""
    meta = verify_checkpoint(path)
    load_model_weights(path, module, verify=False)
    optimizer.load_state_dict(read_optimizer_state(path, meta))
    restore_rank_rng(path, meta, rank)
    return trainer_state(meta)
