"""Where a training step's time goes: torch.profiler over vlp's and the peer's step, same batch.

Profiles a few steps of each implementation built by bench_train_step.py (CLIP vs open_clip) or
bench_fusion_step.py (BLIP / GIT vs transformers) -- same architecture, optimiser and batch -- and prints, per implementation, the self CPU time grouped into categories
(matmul, attention, layernorm, softmax/loss, elementwise, optimizer, copies/reshapes, embedding,
other) and the top operators with their input shapes. Comparing the two side by side says *which*
ops make the difference, which a single total cannot.

    .venv/bin/python benchmarks/profile_train_step.py [--model clip|blip|git] [--size small] [--steps 3] [--top 15]
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile, record_function

import bench_fusion_step
import bench_train_step

# First matching substring (case-insensitive) wins; names are aten ops and autograd nodes (backward).
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("optimizer", ("_foreach", "adamw", "Optimizer.step")),
    ("attention", ("scaled_dot_product", "scaleddotproduct", "flash_attention", "_efficient_attention", "_scaled_dot", "baddbmm", "bmm")),
    ("matmul", ("addmm", "aten::mm", "mmbackward", "aten::matmul", "aten::linear", "convolution", "conv2d", "mkldnn")),
    ("layernorm", ("layer_norm", "layernorm")),
    ("softmax/loss", ("softmax", "nll_loss", "cross_entropy", "log_softmax")),
    ("embedding", ("embedding",)),
    ("gelu", ("gelu",)),
    ("copies/reshapes", ("copy_", "clone", "contiguous", "cat", "_to_copy", "index", "where", "masked_fill", "expand", "transpose", "permute", "view", "reshape", "select", "slice", "stack")),
    ("elementwise", ("add", "mul", "div", "sub", "fill_", "zero_", "sum", "mean", "norm", "exp", "clamp", "ones", "zeros", "empty", "arange")),
]


def category(name: str) -> str:
    lowered = name.lower()
    for label, needles in CATEGORIES:
        if any(n.lower() in lowered for n in needles):
            return label
    return "other"


def profile_step(step, steps: int) -> torch.profiler.profile:
    step()  # warm-up outside the profile
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(steps):
            with record_function("train_step"):
                step()
    return prof


def _phase(event) -> str | None:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith("phase:"):
            return parent.name.removeprefix("phase:")
        parent = parent.cpu_parent
    return None


def _countable(event) -> bool:
    """An op or autograd node (not a label, not the engine's wrapper around a node)."""
    name = event.name
    return not (name.startswith(("phase:", "autograd::engine", "train_step")) or name.startswith("<"))


def _has_countable_ancestor(event) -> bool:
    parent = event.cpu_parent
    while parent is not None and not parent.name.startswith("phase:"):
        if _countable(parent):
            return True
        parent = parent.cpu_parent
    return False


def summarise(prof: torch.profiler.profile, steps: int) -> tuple[float, dict[str, float]]:
    """(wall ms per step, ms per step per category).

    Forward/backward ops are grouped by name (self CPU time, so nothing counts twice); everything
    under the optimizer phase (harness labels) is one 'optimizer (AdamW)' row whatever its op names
    (CPU AdamW runs sqrt/div/addcdiv per tensor); 'python/dispatch overhead' = phase wall time not
    spent inside any aten op."""
    by_category: dict[str, float] = defaultdict(float)
    phase_wall: dict[str, float] = defaultdict(float)
    wall = 0.0
    for event in prof.events():
        if event.name == "train_step":
            wall += event.cpu_time_total
        elif event.name.startswith("phase:"):
            phase_wall[event.name.removeprefix("phase:")] += event.cpu_time_total
        elif _countable(event) and not _has_countable_ancestor(event):  # outermost ops only
            phase = _phase(event)
            if phase == "optimizer":
                by_category["optimizer (AdamW)"] += event.cpu_time_total
            elif phase is not None:
                by_category[category(event.name)] += event.cpu_time_total
    scale = 1000 * steps
    result = {k: v / scale for k, v in by_category.items()}
    covered = sum(by_category.values())
    result["python/dispatch overhead"] = max(0.0, sum(phase_wall.values()) - covered) / scale
    for phase, value in phase_wall.items():
        result[f"[phase {phase}]"] = value / scale
    return wall / scale, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="clip", choices=["clip", "blip", "git"])
    parser.add_argument("--size", default="small")
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: see RESULTS.md; use $(nproc) on a quiet machine)")
    parser.add_argument("--trace", help="write vlp's Chrome trace here (open in chrome://tracing or Perfetto)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.model == "clip":
        steps, _, batch = bench_train_step.build_steps(args.size, args.dtype)
    else:
        steps, _, batch = bench_fusion_step.build_steps(args.model, args.size, args.dtype)
    summaries = {}
    for name, step in steps.items():
        prof = profile_step(step, args.steps)
        summaries[name] = summarise(prof, args.steps)
        if args.trace and name == "vlp":
            prof.export_chrome_trace(args.trace)
        print(f"\n== {name}: top {args.top} ops by self CPU time ({args.steps} steps, batch {len(batch)}, {args.dtype}) ==")
        print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=args.top, max_name_column_width=40, max_shapes_column_width=60))
    names = list(summaries)
    keys = {k for _, cats in summaries.values() for k in cats}
    rows = sorted((k for k in keys if not k.startswith("[")), key=lambda k: -summaries[names[0]][1].get(k, 0.0))
    rows += sorted(k for k in keys if k.startswith("["))
    print("\nms per step: outermost ops of forward+backward by category (incl. their child ops), the optimizer")
    print("phase as one row, and each phase's wall time")
    print(f"{'category':<28}" + "".join(f"{n:>12}" for n in names))
    for label in rows:
        print(f"{label:<28}" + "".join(f"{summaries[n][1].get(label, 0.0):>12.1f}" for n in names))
    print(f"{'wall per step':<28}" + "".join(f"{summaries[n][0]:>12.1f}" for n in names))

if __name__ == "__main__":
    main()
