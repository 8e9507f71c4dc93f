"""What machine a benchmark ran on, and its measured matmul peak: the denominator of MFU.

A throughput number means nothing without the machine next to it, and an MFU needs a peak. The
vendor's datasheet peak is not reachable by PyTorch on a shared CPU, so the peak used here is the
*measured* one: large square matmuls (the best case for the BLAS library) at the same thread count
the benchmark uses, median of repeats. MFU = model FLOPs per step / step time / this peak then says
how far the training step is from "everything is one big GEMM".

    .venv/bin/python benchmarks/machine.py [--threads 2] [--size 2048] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from importlib import metadata

import torch


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def native_bf16() -> bool:
    """AVX512-BF16 or AMX-BF16: without either, CPU bf16 matmuls are emulated and ~100x slower."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def load_average() -> str:
    """`uptime`'s 1/5/15-minute load: the machine is shared, so every table records it."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def describe(threads: int | None = None) -> dict[str, object]:
    """Machine, threads and library versions, as one flat JSON-able dict."""
    info: dict[str, object] = {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "threads": threads if threads is not None else torch.get_num_threads(),
        "native_bf16": native_bf16(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "open_clip": _version("open_clip_torch"),
        "transformers": _version("transformers"),
        "load_1_5_15": load_average(),
    }
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5)
        info["commit"] = commit.stdout.strip() or "unknown"
    except (OSError, subprocess.TimeoutExpired):
        info["commit"] = "unknown"
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def matmul_probe(dtype: torch.dtype = torch.float32, size: int = 2048, device: str = "cpu") -> tuple[Callable[[], None], float]:
    """(one `size x size @ size x size` product in `dtype`, its FLOPs): the peak's unit of work.

    Benchmarks time it interleaved with their steps, so the MFU denominator sees the same machine
    load as the numerator (on a shared machine a peak measured once, earlier, does not)."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)

    def probe() -> None:
        torch.mm(a, b)
        if device != "cpu":
            torch.cuda.synchronize()

    return probe, 2.0 * size**3


def matmul_peak(dtype: torch.dtype = torch.float32, size: int = 2048, repeats: int = 7, device: str = "cpu") -> float:
    """Median GFLOP/s of `size x size @ size x size` in `dtype`.

    Median, not max: on a shared machine the max is a lucky moment that training never sees again,
    while the median is what a steady loop gets. One warm-up product first (thread pool, page faults).
    """
    probe, flops = matmul_probe(dtype, size, device)
    probe()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        probe()
        times.append(time.perf_counter() - start)
    return flops / statistics.median(times) / 1e9


def peaks(threads: int, size: int = 2048, bf16: bool = True) -> dict[str, float]:
    """fp32 (and bf16, when the CPU has native bf16) peaks at `threads` threads, in GFLOP/s."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        result = {"fp32_gflops": matmul_peak(torch.float32, size)}
        if bf16 and native_bf16():
            result["bf16_gflops"] = matmul_peak(torch.bfloat16, size)
        return result
    finally:
        torch.set_num_threads(previous)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    args = parser.parse_args()
    info = describe(args.threads)
    info.update(peaks(args.threads, args.size))
    if args.json:
        print(json.dumps(info))
        return
    for key, value in info.items():
        shown = f"{value:.1f}" if isinstance(value, float) else value
        print(f"{key:<14}{shown}")


if __name__ == "__main__":
    main()
