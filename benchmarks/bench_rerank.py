"""ITM scoring throughput, vlp vs transformers BLIP, at the same (blip_small) architecture.

Re-ranking ALBEF/BLIP-style costs one fusion pass per (image, caption) pair, so pairs/s decides
whether k_test = 256 on COCO-5k is an evening or a week. Four ways are timed on the same P pairs,
interleaved (one call of each per round, order alternating), median of the rounds:

* vlp `itm_pair_scores`: image and text features cached once (as `encode_gallery` does); pairs
  taken in image order, each batch carries each distinct image once (its cross-attention
  keys/values projected once per layer, not once per pair), only its longest caption's columns,
  and the last layer runs its query side on [CLS] alone (`ImageTextModel.itm_pair_logits`);
* vlp per pair (the path before): `fuse(image.select(pairs), text.select(pairs))` + `itm_logits`
  on the same cached features, pairs in the given order;
* transformers, cached: `BlipForImageTextRetrieval.text_encoder` with precomputed image features
  (what BLIP's own evaluation code does) + `itm_head`;
* transformers, plain: `BlipForImageTextRetrieval(pixel_values, input_ids, use_itm_head=True)` per
  batch of pairs, re-encoding each pair's image (what a user calling the model gets; the issue's
  target peer).

Two pair sets: ``rerank`` = a contiguous window of the pairs `itm_rerank` scores for the gallery
(ITC top-k of both directions, deduplicated, image-major: what re-ranking feeds the scorer), and
``random`` = uniformly random pairs (the worst case for sharing images within a batch). Then the
end-to-end `itm_rerank` of the gallery (ITC top-k -> ITM, both directions), new vs per-pair scorer.
``--ablation`` (default on) times the new path with its parts switched off one at a time: (a) each
distinct image's keys/values projected once, (b) the last layer on [CLS] only, (d) the attention of
the pairs sharing an image stacked into one call (`vlp.layers.shared_context`); and by batch size
(c: pairs are always taken image-major). Captions here have no padding, so `trim_padding` is idle.

    PYTHONPATH=benchmarks:src .venv/bin/python benchmarks/bench_rerank.py [--pairs 1024] [--batch 256] [--threads 2]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
from collections.abc import Callable
from unittest import mock

import torch

import vlp.adapt.retrieval as retrieval
import vlp.layers.attention as attention
from bench_fusion_step import PeerBLIP, vlp_config
from harness import interleaved, timed_rounds
from machine import load_average
from vlp.adapt.retrieval import GalleryFeatures, itm_pair_scores, itm_rerank
from vlp.fusion import BLIPTextTransformer
from vlp.fusion.base import text_self_mask
from vlp.models import build_model

COCO_PAIRS_K256 = 5000 * 256 + 25000 * 256  # both directions' candidate lists, before removing shared pairs


def per_pair_scores(model, features: GalleryFeatures, image_index: torch.Tensor, text_index: torch.Tensor, batch_size: int = 256, itm_score: str = "logit") -> torch.Tensor:
    """The scorer before the fast path: every pair carries its own copy of its image, full padding,
    the whole fusion output computed and only [CLS] read. Same signature as `itm_pair_scores`."""
    scores = []
    for start in range(0, image_index.shape[0], batch_size):
        fused = model.fuse(
            features.image_for_fusion.select(image_index[start : start + batch_size]),
            features.text_for_fusion.select(text_index[start : start + batch_size]),
            mode="bidirectional",
        )
        logits = model.itm_logits(fused).float()
        scores.append(logits[:, 1] if itm_score == "logit" else logits.softmax(dim=-1)[:, 1])
    return torch.cat(scores)


def rerank_pairs(features: GalleryFeatures, k_test: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The (image, caption) pairs `itm_rerank` scores, image-major, as `rerank_candidates` builds them."""
    from vlp.metrics.retrieval import retrieval_ranks

    itc = retrieval_ranks(features.image_embeds, features.text_embeds, features.text_to_image, 1024, top_k=k_test)
    ni, nt = features.num_images, features.num_texts
    i2t, t2i = itc.i2t_top.index, itc.t2i_top.index
    keys = torch.cat([
        torch.arange(ni).repeat_interleave(i2t.shape[1]) * nt + i2t.reshape(-1),
        t2i.reshape(-1) * nt + torch.arange(nt).repeat_interleave(t2i.shape[1]),
    ]).unique()
    return keys // nt, keys % nt


def _pool_every_row(self, image, text, mode=None, image_index=None):
    """Ablation: BLIP's `pool` with each distinct image once but the last layer on every row."""
    mode = self.resolve_mode(mode, None)
    mask = text_self_mask(mode, text.tokens.shape[1], text.mask, None, text.tokens.device)
    return self._run(text, decoder=False, mask=mask, image=image, image_index=image_index)[:, 0]


def ablation_steps(run: Callable[[], object]) -> dict[str, Callable[[], None]]:
    """The new path with its parts switched off one at a time (what each idea is worth)."""
    def variant(*patches) -> Callable[[], None]:
        def step() -> None:
            with contextlib.ExitStack() as stack:
                for target, name, value in patches:
                    stack.enter_context(mock.patch.object(target, name, value))
                run()
        return step

    no_stack = (attention, "worth_grouping", lambda rows, contexts: False)
    every_row = (BLIPTextTransformer, "pool", _pool_every_row)
    return {
        "(a) distinct images once, gathered k/v": variant(no_stack, every_row),
        "(a)+(b) + last layer on [CLS] only": variant(no_stack),
        "(a)+(b)+(d) + attention stacked per image": variant(),
    }


def interleaved_seconds(steps: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each step after one warm-up call each (`harness.timed_rounds`: interleaved)."""
    for step in steps.values():
        step()
    return {name: statistics.median(t) for name, t in timed_rounds(steps, repeats).items()}  # type: ignore[arg-type]


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=1024, help="pairs per timed call (a window of the pair set)")
    parser.add_argument("--batch", type=int, default=256, help="pairs per fusion call (all four implementations)")
    parser.add_argument("--images", type=int, default=64, help="gallery images (5 captions each)")
    parser.add_argument("--length", type=int, default=24, help="caption tokens, all real (no padding to trim)")
    parser.add_argument("--k-test", type=int, default=16)
    parser.add_argument("--sets", default="rerank,random")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ablation", action=argparse.BooleanOptionalAction, default=True, help="time the new path with its parts switched off, and by batch size")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    cfg = vlp_config("blip", "small")
    model = build_model(cfg).eval()
    peer = PeerBLIP(cfg).retrieval.eval()
    ni, nt, length = args.images, 5 * args.images, args.length
    pixels = torch.randn(ni, 3, cfg.image_encoder.image_size, cfg.image_encoder.image_size)
    ids = torch.randint(1000, 30000, (nt, length))
    ids[:, 0] = 101
    mask = torch.ones_like(ids)

    image_uni, image_in = model.image_pair_features(pixels)
    text_uni, text_in = model.text_pair_features(ids, mask)
    features = GalleryFeatures(
        image_ids=torch.arange(ni), captions=[""] * nt, text_to_image=torch.arange(nt) // 5,
        image_for_fusion=image_in, text_for_fusion=text_in,
        image_embeds=model.project_image(image_uni), text_embeds=model.project_text(text_uni),
    )
    peer_image = peer.vision_model(pixel_values=pixels).last_hidden_state
    generator = torch.Generator().manual_seed(0)
    all_images, all_texts = rerank_pairs(features, args.k_test)
    start = max(0, (all_images.shape[0] - args.pairs) // 2)
    pair_sets = {
        "rerank": (all_images[start : start + args.pairs], all_texts[start : start + args.pairs]),
        "random": (torch.randint(0, ni, (args.pairs,), generator=generator), torch.randint(0, nt, (args.pairs,), generator=generator)),
    }
    print(f"ITM scoring, blip_small dims (width {cfg.fusion.num_heads * 32}, {cfg.fusion.depth} layers, "
          f"{image_in.tokens.shape[1]} image tokens, {length} text tokens), batch {args.batch}, {args.threads} threads, "
          f"median of {args.repeats} interleaved rounds; load before: {load_average()}")
    print(f"re-rank pair set: {all_images.shape[0]} pairs for {ni} images x {nt} captions at k_test={args.k_test} "
          f"({all_images.shape[0] / ni:.0f} per image); timed window of {args.pairs}")
    for set_name in args.sets.split(","):
        images, texts = pair_sets[set_name]
        distinct = [len(images[order].unique()) for order in images.sort().indices.split(args.batch)]
        b = args.batch

        def vlp_new() -> None:
            itm_pair_scores(model, features, images, texts, batch_size=b)

        def vlp_old() -> None:
            per_pair_scores(model, features, images, texts, batch_size=b)

        def peer_cached() -> None:
            for s in range(0, images.shape[0], b):
                i, t = images[s : s + b], texts[s : s + b]
                out = peer.text_encoder(input_ids=ids[t], attention_mask=mask[t], encoder_hidden_states=peer_image[i]).last_hidden_state
                peer.itm_head(out[:, 0])

        def peer_plain() -> None:
            for s in range(0, images.shape[0], b):
                i, t = images[s : s + b], texts[s : s + b]
                peer(pixel_values=pixels[i], input_ids=ids[t], attention_mask=mask[t], use_itm_head=True)

        steps = {
            "vlp itm_pair_scores (new)": vlp_new,
            "vlp per pair (before)": vlp_old,
            "transformers text_encoder (cached)": peer_cached,
            "transformers model(...) per pair batch": peer_plain,
        }
        measured = interleaved(steps, warmup=1, repeats=args.repeats)
        base = images.shape[0] / measured["vlp itm_pair_scores (new)"].median_s
        print(f"\n[{set_name} pairs: {images.shape[0]}, distinct images per batch of the new path: "
              f"median {statistics.median(distinct):.0f}]")
        print(f"{'implementation':<40}{'seconds':>9}{'spread':>8}{'pairs/s':>9}{'MFLOP/pair':>12}{'new / this':>12}")
        for name, m in measured.items():
            rate = images.shape[0] / m.median_s
            print(f"{name:<40}{m.median_s:>9.3f}{m.spread:>8.2f}{rate:>9.0f}{m.flops / images.shape[0] / 1e6:>12.1f}{base / rate:>11.2f}x")
        if set_name == "rerank":
            print(f"COCO-5k k_test=256 (<= {COCO_PAIRS_K256 / 1e6:.2f} M pairs) at the new path's rate: "
                  f"{COCO_PAIRS_K256 / base / 3600:.2f} h on this CPU (blip_small dims, {length}-token captions)")

        if set_name == "rerank" and args.ablation:
            variants = {"per pair (before)": vlp_old, **ablation_steps(vlp_new)}
            seconds = interleaved_seconds(variants, args.repeats)
            print(f"ablation on the {set_name} pairs (interleaved medians):")
            for name, sec in seconds.items():
                print(f"  {name:<46}{sec:>7.3f} s{images.shape[0] / sec:>7.0f} pairs/s{seconds['per pair (before)'] / sec:>7.2f}x")
            sweep = interleaved_seconds({str(size): (lambda size=size: itm_pair_scores(model, features, images, texts, batch_size=size)) for size in (64, 128, 256, 512, 1024)}, args.repeats)
            print("  new path by batch size: " + ", ".join(f"{size}: {images.shape[0] / sec:.0f}" for size, sec in sweep.items()) + " pairs/s")

    def rerank_new() -> None:
        itm_rerank(model, features, args.k_test, batch_size=args.batch)

    def rerank_old() -> None:
        with mock.patch.object(retrieval, "itm_pair_scores", per_pair_scores):
            itm_rerank(model, features, args.k_test, batch_size=args.batch)

    e2e = interleaved_seconds({"new": rerank_new, "old": rerank_old}, 3)
    print(f"\nvlp itm_rerank, {ni} images x {nt} captions, k_test={args.k_test} (both directions, {all_images.shape[0]} pairs; "
          f"median of 3 interleaved): new {e2e['new']:.2f} s ({all_images.shape[0] / e2e['new']:.0f} pairs/s), "
          f"per-pair scorer {e2e['old']:.2f} s ({e2e['old'] / e2e['new']:.2f}x); load after: {load_average()}")


if __name__ == "__main__":
    main()
