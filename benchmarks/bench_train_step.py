"""CLIP training step, vlp vs open_clip, on the *same* architecture: samples/s, peak memory, MFU.

Both sides build one CLIP: ViT (pre-norm, GELU, [CLS] pooled, no pre-transformer LayerNorm) and a
causal pre-norm text transformer pooled at the EOS token (open_clip: argmax of the ids; vlp: last
real token -- the batch puts EOS, the largest id, right there so both pool the same position), 77
positions, 49408-token vocabulary, learned temperature, linear projections without bias. A step is
forward + backward + AdamW over in-batch ITC (open_clip `ClipLoss` / vlp `PretrainTask(itc=1)`) on
one fixed random batch. Widths/depths come from vlp's `clip_tiny` / `clip_small` presets.

Parameter counts must be equal: vlp's preset is set to CLIP's exact architecture the way
`vlp.pretrained.clip_arch` builds it for CLIP weights -- no patch-convolution bias, no token-type
embedding, no embedding LayerNorm (open_clip adds positions to tokens and goes straight into the
blocks). Until 2026-11-29 the benchmark kept the preset's BERT-style extras (4 x width parameters,
one more LayerNorm pass over the text), i.e. vlp did slightly more work than the peer.

    .venv/bin/python benchmarks/bench_train_step.py [--sizes tiny,small] [--dtypes fp32,bf16] [--repeats 10]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch

from harness import (
    PAIR_HEADER, PAIR_LEGEND, add_arguments, adamw, append_jsonl, banner, compare_in_subprocesses, interleaved, pair_cells, parameter_count, parse_or_work,
    random_batch, rss_after, worker_args, zero_grad_step,
)
from machine import load_average
from vlp.data.batch import Batch
from vlp.models import ModelConfig, build_model, model_preset
from vlp.tasks.pretrain import ObjectivesConfig, PretrainTask
from vlp.train.optim import parameter_groups

CONTEXT, VOCAB = 77, 49408
BATCH = {"tiny": 128, "small": 64, "base": 16}  # base: ViT-B/16 at 224 + a 12-layer 512-wide text tower


def vlp_config(size: str) -> ModelConfig:
    """vlp's clip preset of this size, set to open_clip's CLIP (77 ctx, 49408 vocab, no BERT extras)."""
    cfg = model_preset(f"clip_{size}")
    text = cfg.text_encoder
    text.vocab_size, text.max_length, text.type_vocab_size, text.embed_norm = VOCAB, CONTEXT, 0, False
    cfg.image_encoder.patch_bias = False
    assert text.causal and text.norm_first and text.resolved_pool == "last", "clip preset is no longer CLIP-like"
    return cfg


def open_clip_model(cfg: ModelConfig) -> torch.nn.Module:
    import open_clip

    vit, text = cfg.image_encoder, cfg.text_encoder
    vision_cfg = dict(
        layers=vit.depth, width=vit.width, head_width=vit.width // vit.num_heads, mlp_ratio=vit.mlp_ratio,
        patch_size=vit.patch_size, image_size=vit.image_size, no_ln_pre=True,
    )
    text_cfg = dict(
        context_length=CONTEXT, vocab_size=VOCAB, width=text.width, heads=text.num_heads, layers=text.depth,
        mlp_ratio=text.mlp_ratio,
    )
    return open_clip.CLIP(cfg.embed_dim, vision_cfg=vision_cfg, text_cfg=text_cfg, quick_gelu=False)


def build_steps(size: str, dtype: str, which: tuple[str, ...] = ("vlp", "open_clip"), batch_size: int | None = None, vlp_fused: bool = False) -> tuple[dict[str, Callable[[], None]], dict[str, int], Batch]:
    """The training step of each implementation (same batch, same optimiser) and its parameter count."""
    from open_clip.loss import ClipLoss

    cfg = vlp_config(size)
    batch = random_batch(batch_size or BATCH[size], CONTEXT, VOCAB, cfg.image_encoder.image_size)
    steps, counts = {}, {}
    if "vlp" in which:
        torch.manual_seed(0)
        model = build_model(cfg)
        task = PretrainTask(model, ObjectivesConfig(itc=1.0))
        optimizer = adamw(parameter_groups(model, 0.1, model.no_weight_decay()), fused=vlp_fused)
        steps["vlp"] = zero_grad_step(task, optimizer, lambda: task(batch).loss, dtype)
        counts["vlp"] = parameter_count(model)
    if "open_clip" in which:
        torch.manual_seed(0)
        peer = open_clip_model(cfg)
        loss = ClipLoss()
        optimizer = adamw(parameter_groups(peer, 0.1, {"positional_embedding", "class_embedding", "logit_scale"}))
        steps["open_clip"] = zero_grad_step(peer, optimizer, lambda: loss(*peer(batch.pixels, batch.input_ids)), dtype)
        counts["open_clip"] = parameter_count(peer)
    return steps, counts, batch


def check_counts(counts: dict[str, int]) -> None:
    ours, peer = counts["vlp"], counts["open_clip"]
    if ours != peer:
        raise AssertionError(f"parameter counts differ: vlp {ours} vs open_clip {peer} (the architectures are meant to be equal)")


def timing_worker(args: argparse.Namespace) -> dict:
    steps, counts, batch = build_steps(args.size, args.dtype, vlp_fused=args.vlp_fused_adamw)
    check_counts(counts)
    measured = interleaved(steps, warmup=args.warmup, repeats=args.repeats, dtype=args.dtype)
    return {
        "counts": counts,
        "batch": len(batch),
        "measured": {name: vars(m) for name, m in measured.items()},
    }


def memory_worker(args: argparse.Namespace) -> dict:
    steps, _, _ = build_steps(args.size, args.dtype, which=(args.impl,), vlp_fused=args.vlp_fused_adamw)
    return rss_after(steps[args.impl])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser, warmup=3, repeats=10)
    args = parse_or_work(parser, timing_worker, memory_worker)
    if args is None:
        return

    machine, peak = banner(args, "open_clip")
    print("CLIP train step (fwd + bwd + AdamW, in-batch ITC), median of interleaved steps")
    print(f"{'size':<6}{'dtype':<6}{PAIR_HEADER}  load")
    for size in args.sizes.split(","):
        for dtype in args.dtypes.split(","):
            if dtype == "bf16" and "bf16_gflops" not in peak:
                print(f"{size:<6}{dtype:<6}  skipped: this CPU has no native bf16 (AVX512-BF16/AMX); emulated bf16 is ~100x slower")
                continue
            load = load_average()
            result, memory = compare_in_subprocesses(__file__, ("vlp", "open_clip"), worker_args(args, size, dtype))
            cells, records = pair_cells(result, memory, ("vlp", "open_clip"))
            print(f"{size:<6}{dtype:<6}{cells}  {load}", flush=True)
            common = {"benchmark": "train_step_clip", "size": size, "dtype": dtype, "threads": args.threads, "load": load, "machine": machine}
            append_jsonl(args.json, [{**common, **r} for r in records])
    print(PAIR_LEGEND)

if __name__ == "__main__":
    main()
