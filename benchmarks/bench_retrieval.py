"""Chunked recall@K vs the full-matrix approach (open_clip's `get_clip_metrics` style: build the whole
[Ni, Nt] logit matrix, argsort, locate the positive) on a COCO-5k-sized gallery.

Prints a table with seconds and peak extra memory for both, and the ratio. Run:
    .venv/bin/python benchmarks/bench_retrieval.py [--images 5000 --captions-per-image 5]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from vlp.metrics import retrieval_recall


def full_matrix_recall(img: torch.Tensor, txt: torch.Tensor, owner: torch.Tensor, ks=(1, 5, 10)) -> dict[str, float]:
    """The straightforward approach: one [Nt, Ni] matrix, argsort every row (text->image only,
    which is what open_clip's single-caption protocol computes)."""
    logits = txt @ img.t()
    ranking = logits.argsort(dim=1, descending=True)
    preds = (ranking == owner[:, None]).nonzero()[:, 1]
    return {f"t2i_r{k}": 100.0 * (preds < k).float().mean().item() for k in ks}


def measure(method: str, args: argparse.Namespace) -> tuple[float, float, dict[str, float]]:
    """(seconds, peak RSS growth in MB, metrics) for one method, in a fresh process so peaks do not mix."""
    import resource

    torch.manual_seed(0)
    owner = torch.arange(args.images).repeat_interleave(args.captions_per_image)
    img = F.normalize(torch.randn(args.images, args.dim), dim=-1)
    txt = F.normalize(img[owner] + torch.randn(len(owner), args.dim), dim=-1)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    if method == "vlp":
        metrics = retrieval_recall(img, txt, owner, chunk_size=1024)
    else:
        metrics = full_matrix_recall(img, txt, owner)
    seconds = time.perf_counter() - start
    growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    return seconds, growth_mb, metrics


def main() -> None:
    import json
    import subprocess
    import sys

    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--captions-per-image", type=int, default=5)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--method", choices=["vlp", "full"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.method:
        print(json.dumps(measure(args.method, args)))
        return
    results = {}
    for method in ("vlp", "full"):
        cmd = [sys.executable, __file__, "--method", method, "--images", str(args.images),
               "--captions-per-image", str(args.captions_per_image), "--dim", str(args.dim)]
        results[method] = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    (ours_s, ours_mb, ours), (full_s, full_mb, full) = results["vlp"], results["full"]
    assert all(abs(ours[k] - full[k]) < 1e-6 for k in full), (ours, full)
    print(f"gallery: {args.images} images x {args.images * args.captions_per_image} captions, dim {args.dim}")
    print(f"{'method':<34}{'seconds':>9}{'peak RSS growth MB':>20}")
    print(f"{'vlp chunked, both directions':<34}{ours_s:>9.2f}{ours_mb:>20.0f}")
    print(f"{'full matrix + argsort, t2i only':<34}{full_s:>9.2f}{full_mb:>20.0f}")
    print(f"ratio full/vlp: time {full_s / ours_s:.1f}x, memory {full_mb / max(ours_mb, 1):.1f}x; t2i R@1/5/10 identical: {[round(full[k], 2) for k in full]}")


if __name__ == "__main__":
    main()
