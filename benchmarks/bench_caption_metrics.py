"""vlp's Java-free caption metrics vs pycocoevalcap on a COCO-5k-sized set (5,000 images x 5 references).

The set is built from the 505 real captions of /work/shared/data/coco-sample with a fixed seed: every
image takes one real image's captions and perturbs them (splice with another caption, drop, repeat or
swap words), the candidate is one more perturbed caption, so n-grams, lengths and document
frequencies vary as with model outputs. Timed in the same run, median of 3 repeats:
  - tokenizer: pure-Python PTB (`ptb_tokenize`) vs pycocoevalcap's PTBTokenizer (Java subprocess);
  - BLEU-1..4, ROUGE-L, CIDEr-D, each on its own, both sides fed the same (Java-)tokenised strings;
  - vlp's `evaluate_captions(tokenize=False)` for all three at once (n-grams shared by BLEU and CIDEr).
Scores are printed side by side and asserted equal (1e-9); a JSON line is appended to
benchmarks/results.jsonl. Run:
    .venv/bin/python benchmarks/bench_caption_metrics.py [--images 5000 --refs 5 --repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from vlp.metrics.caption import bleu, cider_d, evaluate_captions, rouge_l
from vlp.metrics.caption_tokenize import ptb_tokenize

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco-sample" / "captions.json"


def _perturb(caption: str, other: str, rng: random.Random) -> str:
    words, r = caption.split(), rng.random()
    if r < 0.25:  # splice: first part of this caption, second part of another
        tail = other.split()
        words = words[: rng.randint(1, len(words))] + tail[rng.randint(0, len(tail) - 1):]
    elif r < 0.45 and len(words) > 3:  # drop a word
        del words[rng.randrange(len(words))]
    elif r < 0.6:  # repeat a phrase (repeated n-grams)
        start = rng.randrange(len(words))
        words = words + words[start : start + 3]
    elif r < 0.75 and len(words) > 2:  # swap two words
        i, j = rng.sample(range(len(words)), 2)
        words[i], words[j] = words[j], words[i]
    return " ".join(words)


def build_set(images: int, refs: int, seed: int = 0) -> tuple[dict[int, str], dict[int, list[str]]]:
    """Raw (untokenised) candidates and references: {image: caption}, {image: [captions]}."""
    by_image: dict[int, list[str]] = {}
    for a in json.loads(DATA.read_text())["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a["caption"])
    pools, flat = list(by_image.values()), [c for caps in by_image.values() for c in caps]
    rng = random.Random(seed)
    predictions, references = {}, {}
    for i in range(images):
        pool = rng.choice(pools)
        references[i] = [_perturb(rng.choice(pool), rng.choice(flat), rng) for _ in range(refs)]
        predictions[i] = _perturb(rng.choice(pool), rng.choice(flat), rng)
    return predictions, references


def median_time(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--refs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    raw_pred, raw_refs = build_set(args.images, args.refs)
    ids = list(raw_pred)
    java_input = {i: [{"caption": c} for c in [raw_pred[i], *raw_refs[i]]] for i in ids}

    rows = []
    ours_s, ours_tok = median_time(lambda: {i: [ptb_tokenize(c) for c in [raw_pred[i], *raw_refs[i]]] for i in ids}, args.repeats)
    java_s, java_tok = median_time(lambda: PTBTokenizer().tokenize(java_input), args.repeats)
    total = sum(len(v) for v in java_tok.values())
    differ = sum(a != b for i in ids for a, b in zip(ours_tok[i], java_tok[i]))
    rows.append(("PTB tokenizer", ours_s, java_s, f"{total - differ}/{total} same", ""))

    preds = {i: java_tok[i][0] for i in ids}
    refs = {i: java_tok[i][1:] for i in ids}
    gts, res = refs, {i: [preds[i]] for i in ids}
    scores: dict[str, tuple[float, float]] = {}

    ours_s, ours_b = median_time(lambda: bleu(preds, refs)[0], args.repeats)
    ref_s, ref_b = median_time(lambda: Bleu(4).compute_score(gts, res, verbose=0)[0], args.repeats)
    for k in range(4):
        scores[f"bleu_{k + 1}"] = (ours_b[k], ref_b[k])
    rows.append(("BLEU-1..4", ours_s, ref_s, f"{ours_b[3]:.6f}", f"{ref_b[3]:.6f}"))

    ours_s, ours_r = median_time(lambda: rouge_l(preds, refs)[0], args.repeats)
    ref_s, ref_r = median_time(lambda: Rouge().compute_score(gts, res)[0], args.repeats)
    scores["rouge_l"] = (ours_r, float(ref_r))
    rows.append(("ROUGE-L", ours_s, ref_s, f"{ours_r:.6f}", f"{ref_r:.6f}"))

    ours_s, ours_c = median_time(lambda: cider_d(preds, refs)[0], args.repeats)
    ref_s, ref_c = median_time(lambda: Cider().compute_score(gts, res)[0], args.repeats)
    scores["cider"] = (ours_c, float(ref_c))
    rows.append(("CIDEr-D", ours_s, ref_s, f"{ours_c:.6f}", f"{ref_c:.6f}"))

    all_s, all_scores = median_time(lambda: evaluate_captions(preds, refs, tokenize=False), args.repeats)
    sum_ref = sum(r[2] for r in rows[1:])
    rows.append(("all three, one call", all_s, sum_ref, f"cider {all_scores['cider']:.6f}", "(sum of the 3 above)"))

    for name, (ours, ref) in scores.items():
        assert abs(ours - ref) < 1e-9, (name, ours, ref)
        assert abs(all_scores[name] - ref) < 1e-9, (name, all_scores[name], ref)

    load = os.getloadavg()[0]
    print(f"{args.images} images x {args.refs} references (+1 candidate each), median of {args.repeats}; "
          f"wall seconds; load average {load:.1f} on {os.cpu_count()} CPUs")
    print(f"{'step':<22}{'vlp s':>9}{'pycocoevalcap s':>17}{'ratio':>8}   {'vlp':<18}{'pycocoevalcap'}")
    for name, ours, ref, a, b in rows:
        print(f"{name:<22}{ours:>9.3f}{ref:>17.3f}{ref / ours:>7.1f}x   {a:<18}{b}")
    record = {
        "bench": "caption_metrics", "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "images": args.images, "refs": args.refs,
        "repeats": args.repeats, "machine": platform.node(), "numpy": np.__version__,
        "load_average": round(load, 1), "cpus": os.cpu_count(),
        "seconds": {name: {"vlp": round(ours, 4), "pycocoevalcap": round(ref, 4)} for name, ours, ref, _, _ in rows},
        "scores": {k: {"vlp": v[0], "pycocoevalcap": v[1]} for k, v in scores.items()},
        "tokenizer_same": f"{total - differ}/{total}",
    }
    with open(Path(__file__).resolve().parent / "results.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
