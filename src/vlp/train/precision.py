"""Mixed precision: which autocast dtype to use, and why.

Master weights and optimiser state always stay float32; autocast only lowers the matmuls. Losses
cast to float32 before the similarity softmax / logsumexp (``soft_cross_entropy``, ``itm_loss`` and
``token_prediction_loss`` call ``.float()``), and the logit scale is a float32 parameter.

``auto`` picks bf16 only where the hardware runs it natively -- CUDA devices that report bf16
support, CPUs with AMX or AVX512-BF16 -- because emulated bf16 is much slower than float32 (on
CPUs without those units a bf16 matmul falls back to scalar code). fp16 needs a gradient scaler
and is CUDA only.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["Precision", "cpu_bf16_flags", "resolve_precision"]

_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    name: str  # resolved: fp32 | bf16 | fp16
    reason: str  # logged once at start, so a slow or odd run explains itself

    @property
    def dtype(self) -> torch.dtype | None:
        return _DTYPES[self.name]

    def autocast(self, device: torch.device) -> AbstractContextManager:
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(device.type, dtype=self.dtype)

    def grad_scaler(self, device: torch.device) -> torch.amp.GradScaler | None:
        return torch.amp.GradScaler(device.type) if self.name == "fp16" else None


def cpu_bf16_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The native-bf16 CPU flags present (amx_bf16, avx512_bf16); empty where unreadable."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return {"amx_bf16", "avx512_bf16"} & set(line.split(":", 1)[1].split())
    return set()


def resolve_precision(requested: str, device: torch.device, cpuinfo: Path = Path("/proc/cpuinfo")) -> Precision:
    if requested not in ("auto", *_DTYPES):
        raise ValueError(f"train.precision must be auto, fp32, bf16 or fp16, got {requested!r}")
    if requested == "fp16" and device.type != "cuda":
        raise ValueError(f"train.precision=fp16 needs a CUDA device (GradScaler), but the device is {device}; use bf16 or fp32")
    if requested != "auto":
        return Precision(requested, "requested in the config")
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return Precision("bf16", f"auto: {torch.cuda.get_device_name(device)} supports bf16 natively")
        return Precision("fp32", "auto: this CUDA device has no native bf16")
    if device.type == "cpu":
        flags = cpu_bf16_flags(cpuinfo)
        if flags:
            return Precision("bf16", f"auto: CPU has native bf16 ({', '.join(sorted(flags))})")
        return Precision("fp32", "auto: CPU lacks amx_bf16/avx512_bf16, where bf16 matmuls are emulated and far slower than fp32")
    return Precision("fp32", f"auto: no bf16 rule for device type {device.type!r}")
