"""ITM scoring throughput, vlp vs transformers BLIP, at the same (blip_small) architecture.

Re-ranking ALBEF/BLIP-style costs one fusion pass per (image, caption) pair, so pairs/s decides
whether k_test = 256 on COCO-5k is an evening or a week. Three ways are timed on the same P pairs:

* vlp `itm_pair_scores`: image and text features cached once (as `encode_gallery` does), then the
  fusion over batches of pairs (SDPA attention, only the [CLS] row goes to the ITM head);
* transformers, cached: `BlipForImageTextRetrieval.text_encoder` with precomputed image features
  (what BLIP's own evaluation code does) + `itm_head`;
* transformers, plain: `BlipForImageTextRetrieval(pixel_values, input_ids, use_itm_head=True)` per
  batch of pairs, re-encoding each pair's image (what a user calling the model gets).

Also the end-to-end vlp `itm_rerank` (ITC top-k -> ITM, both directions) of a gallery, in seconds.

    .venv/bin/python benchmarks/bench_rerank.py [--pairs 512] [--batch 128] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from bench_fusion_step import PeerBLIP, vlp_config
from vlp.adapt.retrieval import GalleryFeatures, itm_pair_scores, itm_rerank
from vlp.models import build_model


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=512)
    parser.add_argument("--batch", type=int, default=128, help="pairs per fusion call")
    parser.add_argument("--images", type=int, default=64, help="gallery images (5 captions each) for itm_rerank")
    parser.add_argument("--k-test", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    cfg = vlp_config("blip", "small")
    model = build_model(cfg).eval()
    peer = PeerBLIP(cfg).retrieval.eval()
    ni, nt, length = args.images, 5 * args.images, 24
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
    generator = torch.Generator().manual_seed(0)
    image_index = torch.randint(0, ni, (args.pairs,), generator=generator)
    text_index = torch.randint(0, nt, (args.pairs,), generator=generator)
    peer_image = peer.vision_model(pixel_values=pixels).last_hidden_state

    def vlp_pairs() -> None:
        itm_pair_scores(model, features, image_index, text_index, batch_size=args.batch)

    def peer_cached() -> None:
        for s in range(0, args.pairs, args.batch):
            i, t = image_index[s : s + args.batch], text_index[s : s + args.batch]
            out = peer.text_encoder(input_ids=ids[t], attention_mask=mask[t], encoder_hidden_states=peer_image[i]).last_hidden_state
            peer.itm_head(out[:, 0])

    def peer_plain() -> None:
        for s in range(0, args.pairs, args.batch):
            i, t = image_index[s : s + args.batch], text_index[s : s + args.batch]
            peer(pixel_values=pixels[i], input_ids=ids[t], attention_mask=mask[t], use_itm_head=True)

    rows = []
    for name, fn in (("vlp itm_pair_scores (cached)", vlp_pairs), ("transformers text_encoder (cached)", peer_cached), ("transformers model(...) per pair batch", peer_plain)):
        seconds = _median_time(fn, args.repeats)
        rows.append((name, seconds, args.pairs / seconds))
    base = rows[0][2]
    print(f"ITM scoring of {args.pairs} pairs, batch {args.batch}, blip_small dims, {args.threads} threads")
    print(f"{'implementation':<42}{'seconds':>9}{'pairs/s':>10}{'vlp / this':>12}")
    for name, seconds, rate in rows:
        print(f"{name:<42}{seconds:>9.3f}{rate:>10.0f}{base / rate:>11.2f}x")
    rerank = _median_time(lambda: itm_rerank(model, features, args.k_test, batch_size=args.batch), 1)
    print(f"vlp itm_rerank, {ni} images x {nt} captions, k_test={args.k_test} (both directions): {rerank:.2f} s")


if __name__ == "__main__":
    main()
