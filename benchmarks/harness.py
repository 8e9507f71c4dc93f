"""Shared measuring code of the training-step benchmarks (bench_train_step.py, bench_fusion_step.py).

Why a harness: the two scripts must time vlp and its peer *the same way*, or the ratio measures the
harness. The rules it enforces:
  * interleaving -- one vlp step, one peer step, alternating which goes first, so the noise of a
    shared machine (other processes, frequency changes) falls on both sides alike;
  * warm-up steps first (allocator, thread pool, AdamW state creation) and the median of the timed
    steps, not the mean (one descheduled step would dominate a mean);
  * FLOPs counted once per step by `torch.utils.flop_counter.FlopCounterMode` (matmuls, convs,
    attention: forward and backward; SDPA on its math backend while counting, see `count_flops`),
    so MFU does not depend on a hand-written formula;
  * peak memory from `ru_maxrss` of a *fresh* subprocess per (implementation, configuration): a
    process's max RSS never goes down, so measuring two models in one process would hide the smaller.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.profiler import record_function
from torch.utils.flop_counter import FlopCounterMode

from machine import describe, matmul_probe, peaks
from vlp.data.batch import Batch

Step = Callable[[], None]


@dataclass
class Measured:
    """One implementation's timing of one configuration."""

    median_s: float
    spread: float  # (p75 - p25) / median: how noisy the timed steps were
    flops: float  # per step, forward + backward, as FlopCounterMode counts them

    @property
    def gflops(self) -> float:
        return self.flops / self.median_s / 1e9

    def samples_per_s(self, batch: int) -> float:
        return batch / self.median_s

    def mfu(self, peak: Measured) -> float:
        """Model FLOPs utilisation against the interleaved matmul probe (see `interleaved`)."""
        return self.gflops / peak.gflops


def precision_context(dtype: str) -> contextlib.AbstractContextManager:
    """fp32: nothing; bf16: CPU (or CUDA) autocast, the way a mixed-precision trainer runs the step."""
    if dtype == "fp32":
        return contextlib.nullcontext()
    if dtype == "bf16":
        return torch.autocast("cuda" if torch.cuda.is_available() else "cpu", dtype=torch.bfloat16)
    raise ValueError(f"unknown precision {dtype!r} (fp32 or bf16)")


def adamw(params_with_groups: list[dict], lr: float = 1e-4, fused: bool = False) -> torch.optim.AdamW:
    """By default both sides use this exact optimiser (torch's default foreach AdamW): only the model
    differs. ``fused=True`` is what vlp's trainer builds (`vlp.train.optim.build_optimizer`), for the
    ``--vlp-fused-adamw`` rows that compare the two libraries' training steps as each one ships."""
    return torch.optim.AdamW(params_with_groups, lr=lr, betas=(0.9, 0.98), eps=1e-6, fused=fused or None)


def count_flops(step: Step) -> float:
    """FLOPs of one step. SDPA runs on its math backend while counting: FlopCounterMode has no
    formula for the CPU flash kernel (it counted 0 attention FLOPs there), while an explicit
    attention (vlp's short-sequence CPU path, transformers' eager BLIP) is counted as bmm -- so
    without this the two sides of a table would count different work."""
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())


def _quantile_spread(times: list[float]) -> float:
    if len(times) < 4:
        return 0.0
    q1, _, q3 = statistics.quantiles(times, n=4)
    return (q3 - q1) / statistics.median(times)


PEAK = "matmul peak"  # the probe's name among the interleaved steps


def interleaved(steps: dict[str, Step], warmup: int, repeats: int, dtype: str | None = None) -> dict[str, Measured]:
    """Warm up every step, then time `repeats` rounds of one call each, alternating the order.

    With `dtype` ('fp32'/'bf16') a large matmul in that precision joins the rotation as the step
    named `PEAK`: its GFLOP/s is the MFU denominator measured under the same load as the steps."""
    steps = dict(steps)
    probe_flops = None
    if dtype is not None:
        steps[PEAK], probe_flops = matmul_probe(torch.bfloat16 if dtype == "bf16" else torch.float32, size=1024)
    for step in steps.values():
        for _ in range(warmup):
            step()
    flops = {name: count_flops(step) for name, step in steps.items()}
    if probe_flops is not None:
        flops[PEAK] = probe_flops
    times = timed_rounds(steps, repeats)
    return {name: Measured(statistics.median(t), _quantile_spread(t), flops[name]) for name, t in times.items()}


def timed_rounds(steps: dict[str, Step], repeats: int) -> dict[str, list[float]]:
    """Seconds of each step over `repeats` rounds of one call each, the order alternating per round."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    for round_index in range(repeats):
        for name in names if round_index % 2 == 0 else reversed(names):
            start = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - start)
    return times


def peak_rss_mb() -> float:
    """Max resident set size of this process so far, MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_after(step: Step, steps: int = 3) -> dict[str, float]:
    """Peak RSS before the first step (model, optimiser, batch built) and after `steps` steps.

    Meant to run in a fresh process (see `run_worker`); the growth is activations + gradients +
    AdamW state, the part where two implementations of one architecture can differ."""
    before = peak_rss_mb()
    for _ in range(steps):
        step()
    after = peak_rss_mb()
    return {"rss_built_mb": before, "rss_peak_mb": after, "rss_growth_mb": after - before}


def run_worker(script: str, args: list[str], timeout: float = 900) -> dict:
    """Run `script args` in a fresh interpreter; its last stdout line is one JSON object."""
    done = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{script} {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def zero_grad_step(module: torch.nn.Module, optimizer: torch.optim.Optimizer, loss_fn: Callable[[], torch.Tensor], dtype: str) -> Step:
    """One full training step: forward (under the precision context) + backward + AdamW step."""

    def step() -> None:
        # The labels cost nothing without a profiler; with one they split the step into phases.
        optimizer.zero_grad(set_to_none=True)
        with record_function("phase:forward"), precision_context(dtype):
            loss = loss_fn()
        with record_function("phase:backward"):
            loss.backward()
        with record_function("phase:optimizer"):
            optimizer.step()

    module.train()
    return step


def random_batch(batch: int, length: int, vocab: int, image_size: int, seed: int = 0) -> Batch:
    """A fixed batch of random pixels and captions of random lengths (8..length), padded with 0.

    The last real token is the largest id (`vocab - 1`, the EOS): open_clip pools at the argmax id,
    vlp's causal text at the last real token, and this way both pool the same position."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min(8, length), length + 1, (batch,), generator=generator)
    ids = torch.randint(1, vocab - 1, (batch, length), generator=generator)
    positions = torch.arange(length)[None]
    mask = (positions < lengths[:, None]).long()
    ids = torch.where(positions == lengths[:, None] - 1, vocab - 1, ids) * mask
    pixels = torch.randn(batch, 3, image_size, image_size, generator=generator)
    return Batch(pixels=pixels, input_ids=ids, attention_mask=mask, image_ids=torch.arange(batch))


def parameter_count(*modules: torch.nn.Module) -> int:
    """Parameters of several modules, each shared tensor counted once (tied or shared weights)."""
    seen: dict[int, int] = {}
    for module in modules:
        for param in module.parameters():
            seen[id(param)] = param.numel()
    return sum(seen.values())


def compare_in_subprocesses(script: str, impls: tuple[str, str], args: list[str]) -> tuple[dict, dict[str, dict]]:
    """Timing of both implementations interleaved in one fresh process, then each one's memory in its own."""
    timing = run_worker(script, ["--worker", "timing", *args])
    memory = {impl: run_worker(script, ["--worker", "memory", "--impl", impl, *args]) for impl in impls}
    return timing, memory


def append_jsonl(path: str | None, records: list[dict]) -> None:
    """One JSON object per line, each stamped with the UTC time it was written."""
    if not path:
        return
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    with open(path, "a") as handle:
        for record in records:
            handle.write(json.dumps({"timestamp": stamp, **record}) + "\n")


def pair_cells(result: dict, memory: dict[str, dict], impls: tuple[str, str]) -> tuple[str, list[dict]]:
    """The table cells shared by both training-step tables, and one JSON record per implementation.

    Cells: batch, both parameter counts, both samples/s, the ratio (peer time / vlp time), both MFUs
    against the interleaved matmul probe, the probe's GFLOP/s, both peak-RSS growths, the spread."""
    ours, peer, probe = (Measured(**result["measured"][k]) for k in (*impls, PEAK))
    batch, counts = result["batch"], result["counts"]
    cells = (
        f"{batch:>6}{counts[impls[0]] / 1e6:>9.3f}M/{counts[impls[1]] / 1e6:.3f}M"
        f"{ours.samples_per_s(batch):>11.1f}{peer.samples_per_s(batch):>11.1f}{peer.median_s / ours.median_s:>8.2f}x"
        f"{100 * ours.mfu(probe):>8.1f}%{100 * peer.mfu(probe):>8.1f}%{probe.gflops:>10.1f}"
        f"{memory[impls[0]]['rss_growth_mb']:>8.0f}{memory[impls[1]]['rss_growth_mb']:>8.0f}"
        f"{100 * max(ours.spread, peer.spread):>7.0f}%"
    )
    records = [
        {
            "impl": impl, "batch": batch, "params": counts[impl], "median_s": m.median_s, "spread": m.spread,
            "samples_per_s": m.samples_per_s(batch), "flops_per_step": m.flops, "mfu": m.mfu(probe),
            "peak_gflops": probe.gflops, **memory[impl],
        }
        for impl, m in ((impls[0], ours), (impls[1], peer))
    ]
    return cells, records


PAIR_HEADER = f"{'batch':>6}{'params vlp/peer':>20}{'vlp smp/s':>11}{'peer smp/s':>11}{'vlp/peer':>9}{'vlp MFU':>9}{'peer MFU':>9}{'peak GF/s':>10}{'vlp MB':>8}{'peer MB':>8}{'spread':>8}"
PAIR_LEGEND = (
    "vlp/peer = peer step time / vlp step time (> 1: vlp faster); MFU = FlopCounterMode FLOPs per step / step time / the\n"
    "GFLOP/s of a 1024^3 matmul in the step's precision timed interleaved with the steps (peak GF/s); MB = peak RSS growth\n"
    "over the built model in a fresh process (activations + grads + AdamW state); spread = worst (p75-p25)/median of the two"
)


def worker_args(args: argparse.Namespace, size: str, dtype: str) -> list[str]:
    """The command line of one timing/memory worker subprocess."""
    fused = ["--vlp-fused-adamw"] if getattr(args, "vlp_fused_adamw", False) else []
    return ["--size", size, "--dtype", dtype, "--threads", str(args.threads), "--warmup", str(args.warmup), "--repeats", str(args.repeats), *fused]


def add_arguments(parser: argparse.ArgumentParser, warmup: int, repeats: int) -> None:
    """The options both training-step scripts share, and the hidden ones of their worker processes."""
    parser.add_argument("--sizes", default="tiny,small")
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: see RESULTS.md; use $(nproc) on a quiet machine)")
    parser.add_argument("--warmup", type=int, default=warmup)
    parser.add_argument("--repeats", type=int, default=repeats, help="timed steps per implementation (interleaved)")
    parser.add_argument("--json", help="append one JSON object per measurement to this file")
    parser.add_argument("--vlp-fused-adamw", action="store_true", help="vlp's side uses the fused AdamW its trainer builds (peer: foreach)")
    parser.add_argument("--worker", choices=["timing", "memory"], help=argparse.SUPPRESS)
    for hidden in ("--size", "--dtype", "--impl"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)


def parse_or_work(parser: argparse.ArgumentParser, timing: Callable[[argparse.Namespace], dict], memory: Callable[[argparse.Namespace], dict]) -> argparse.Namespace | None:
    """Parse the options and set the thread count; in a worker process run its job, print its JSON
    result and return None (the caller then exits), else return the options for the table driver."""
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not args.worker:
        return args
    print(json.dumps(timing(args) if args.worker == "timing" else memory(args)))
    return None


def banner(args: argparse.Namespace, peer_library: str) -> tuple[dict, dict[str, float]]:
    """Print the machine line every table starts with; (machine description, standalone peaks)."""
    machine = describe(args.threads)
    peak = peaks(args.threads)
    bf16 = f", bf16 {peak['bf16_gflops']:.0f} GFLOP/s" if "bf16_gflops" in peak else ""
    print(f"machine: {machine['cpu']}, {args.threads} threads, torch {machine['torch']}, {peer_library} {machine[peer_library]}; "
          f"matmul peak measured now fp32 {peak['fp32_gflops']:.0f} GFLOP/s{bf16} (MFU uses the interleaved probe)")
    return machine, peak
