"""What every importer shares: reading a weights directory, strict loading with errors that name keys.

Importers convert a foreign state dict to our parameter names and then load it with
`load_converted`, which refuses to load half a model: a missing key, an unexpected key or a shape
mismatch is an error that names the keys (and shapes) at fault and the source format, so an
unsupported variant of a checkpoint fails loudly instead of leaving random weights behind.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vlp.encoders.convert import StateDict, load_state_dict_file

__all__ = ["PretrainedError", "cat_qkv", "load_converted", "read_json", "weights_file"]

# Hugging Face `save_pretrained` names, in order of preference: safetensors needs no unpickling.
_HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


class PretrainedError(ValueError):
    """Weights or their config do not fit the vlp model they are imported into."""


def read_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{file} not found (vlp never downloads weights)")
    data = json.loads(file.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise PretrainedError(f"{file}: expected a JSON object")
    return data


def weights_file(directory: str | os.PathLike[str]) -> Path:
    """The weights of a Hugging Face model directory: model.safetensors, else pytorch_model.bin."""
    root = Path(directory)
    for name in _HF_WEIGHT_FILES:
        if (root / name).is_file():
            return root / name
    if (root / "model.safetensors.index.json").is_file():
        raise PretrainedError(f"{root}: sharded checkpoints are not supported; merge the shards into model.safetensors")
    raise FileNotFoundError(f"{root} holds no {' or '.join(_HF_WEIGHT_FILES)} (vlp never downloads weights)")


def load_weights(path: str | os.PathLike[str]) -> StateDict:
    """A weights file or a Hugging Face directory -> tensors (torch files with weights_only=True)."""
    path = Path(path)
    return load_state_dict_file(weights_file(path) if path.is_dir() else path)


def cat_qkv(parts: Mapping[str, torch.Tensor], where: str) -> torch.Tensor:
    """Separate q, k, v projections (weight or bias) -> our fused `qkv` in q, k, v order."""
    missing = [name for name in ("q", "k", "v") if name not in parts]
    if missing:
        raise PretrainedError(f"{where}: attention lacks its {', '.join(missing)} projection")
    return torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)


def load_converted(
    module: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str, unused: str | None = None
) -> list[str]:
    """Load converted weights strictly; every missing/unexpected key and wrong shape is named.

    `unused`: a regex of our keys the source model does not have because it never runs those parts
    (BLIP's retrieval checkpoint has no decoder self-attention); they keep their initial values and
    are returned, so callers can say so. Everything else must match exactly.
    """
    own = module.state_dict()
    absent = sorted(set(own) - set(state_dict))
    kept = [k for k in absent if unused is not None and re.fullmatch(unused, k)]
    missing = [k for k in absent if k not in kept]
    unexpected = sorted(set(state_dict) - set(own))
    shapes = [
        f"{key}: {tuple(state_dict[key].shape)} in the {source} weights, {tuple(own[key].shape)} in vlp"
        for key in sorted(set(own) & set(state_dict))
        if tuple(own[key].shape) != tuple(state_dict[key].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys (in vlp, not in the weights): {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected keys (in the weights, not in vlp): {_names(unexpected)}")
    if shapes:
        problems.append("shape mismatches: " + "; ".join(shapes[:10]) + (f" (+{len(shapes) - 10} more)" if len(shapes) > 10 else ""))
    if problems:
        raise PretrainedError(f"{source} weights do not fit {type(module).__name__}: " + " | ".join(problems))
    with torch.no_grad():
        module.load_state_dict({**own, **{k: v.to(own[k].dtype) for k, v in state_dict.items()}}, strict=True)
    return kept


def _names(keys: list[str], limit: int = 10) -> str:
    return ", ".join(keys[:limit]) + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")
