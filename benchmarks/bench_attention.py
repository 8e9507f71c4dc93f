"""Where CPU attention should leave SDPA: explicit matmul-softmax-matmul vs F.scaled_dot_product_attention.

`vlp.layers.attention.attend` routes CPU attention with more than one query and at most
`EXPLICIT_MAX_SCORES` scores per head to an explicit path and everything else to SDPA. This script
measures that crossover on the machine at hand, so the constant is a measurement, not a guess:
forward + backward of one attention call over
key lengths, at the head layout of the small presets (4 heads of 32), with a padding mask (the
text case) and without one (the ViT case), plus the one-query decoding case. Each row times both
kernels interleaved (alternating order), median of the repeats; ratio > 1 means the explicit path
is faster. The `route` column says which one `attend` picks today.

    .venv/bin/python benchmarks/bench_attention.py [--threads 2] [--lengths 16,32,...] [--repeats 15]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from machine import load_average
from vlp.layers.attention import EXPLICIT_MAX_SCORES, explicit_attention, takes_explicit_path

Kernel = Callable[..., torch.Tensor]


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def inputs(batch: int, heads: int, queries: int, keys: int, head_dim: int, masked: bool) -> tuple:
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(batch, heads, n, head_dim, generator=g, requires_grad=True) for n in (queries, keys, keys))
    mask = None
    if masked:  # right padding, random lengths as in the benchmarks' caption batches
        lengths = torch.randint(min(8, keys), keys + 1, (batch,), generator=g)
        mask = (torch.arange(keys)[None] < lengths[:, None])[:, None, None, :]
    return q, k, v, mask, torch.randn(batch, heads, queries, head_dim, generator=g)


def time_call(kernel: Kernel, q, k, v, mask, grad_out) -> float:
    start = time.perf_counter()
    kernel(q, k, v, mask).backward(grad_out)
    elapsed = time.perf_counter() - start
    q.grad = k.grad = v.grad = None
    return elapsed


def compare(kernels: dict[str, Kernel], case: tuple, warmup: int, repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in kernels}
    names = list(kernels)
    for _ in range(warmup):
        for kernel in kernels.values():
            time_call(kernel, *case)
    for round_index in range(repeats):
        for name in names if round_index % 2 == 0 else reversed(names):
            times[name].append(time_call(kernels[name], *case))
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=32)
    parser.add_argument("--lengths", default="16,32,40,65,96,128,160,197,256")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    kernels = {"sdpa": sdpa, "explicit": explicit_attention}
    print(f"fwd+bwd of one attention call, batch {args.batch}, {args.heads} heads x {args.head_dim}, fp32, "
          f"{args.threads} threads, torch {torch.__version__}; median of {args.repeats} interleaved; load {load_average()}")
    print(f"{'queries':>8}{'keys':>6}{'mask':>6}{'sdpa ms':>10}{'explicit ms':>13}{'sdpa/explicit':>15}  route (EXPLICIT_MAX_SCORES={EXPLICIT_MAX_SCORES})")
    for keys in (int(n) for n in args.lengths.split(",")):
        for queries, masked in ((keys, True), (keys, False), (1, True), (8, True)):
            case = inputs(args.batch, args.heads, queries, keys, args.head_dim, masked)
            ms = compare(kernels, case, args.warmup, args.repeats)
            route = "explicit" if takes_explicit_path(torch.device("cpu"), queries, keys) else "sdpa"
            print(f"{queries:>8}{keys:>6}{'pad' if masked else '-':>6}{ms['sdpa']:>10.2f}{ms['explicit']:>13.2f}"
                  f"{ms['sdpa'] / ms['explicit']:>14.2f}x  {route}", flush=True)
    print(f"load after: {load_average()}")


if __name__ == "__main__":
    main()
