"""vlp's Java-free caption metrics vs pycocoevalcap on a COCO-5k-sized set (5,000 images x 5 references).

The set is built from the 505 real captions of /work/shared/data/coco-sample with a fixed seed: every
image takes one real image's captions and perturbs them (splice with another caption, drop, repeat or
swap words), the candidate is one more perturbed caption, so n-grams, lengths and document
frequencies vary as with model outputs. Its vocabulary is small (~1k words); `--wide-vocab` gives
most words one of 12 suffixes (~11k words, like the real COCO test split) to time vlp's
wide-vocabulary path. Measured in one process, interleaved: each round times every pair of steps
once, vlp and pycocoevalcap alternating which goes first; medians over the rounds:
  - tokenizer: pure-Python PTB (`ptb_tokenize`) vs pycocoevalcap's PTBTokenizer (Java subprocess);
  - BLEU-1..4, ROUGE-L, CIDEr-D, each on its own, both sides fed the same (Java-)tokenised strings;
  - vlp's `evaluate_captions(tokenize=False)` for all three at once vs pycocoevalcap's three scorers.
Scores are printed side by side and asserted equal (1e-12), the load average (`uptime`) is printed
before and after, and a JSON line is appended to benchmarks/results.jsonl. Run:
    .venv/bin/python benchmarks/bench_caption_metrics.py [--images 5000 --refs 5 --repeats 5 --wide-vocab]
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


def widen_vocabulary(captions: list[str], rng: random.Random) -> list[str]:
    """Most words (longer than 2 characters) get one of 12 numeric suffixes: ~11k distinct words."""
    return [" ".join(w + str(rng.randrange(12)) if len(w) > 2 else w for w in c.split()) for c in captions]


def interleaved(pairs: dict[str, tuple[Callable[[], object], Callable[[], object]]], repeats: int) -> dict[str, tuple[float, float, object, object]]:
    """name -> (vlp median s, pycocoevalcap median s, vlp output, pycocoevalcap output). One warm-up
    call per side, then `repeats` rounds; in each round every pair runs once, the side that goes
    first alternating, so load changes on the shared machine fall on both sides alike."""
    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in pairs}
    outputs = {name: (ours(), ref()) for name, (ours, ref) in pairs.items()}
    for round_index in range(repeats):
        for name, fns in pairs.items():
            for side in ((0, 1) if round_index % 2 == 0 else (1, 0)):
                start = time.perf_counter()
                fns[side]()
                times[name][side].append(time.perf_counter() - start)
    return {name: (statistics.median(t[0]), statistics.median(t[1]), *outputs[name]) for name, t in times.items()}


def uptime() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--refs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--wide-vocab", action="store_true", help="~11k distinct words instead of ~1k")
    parser.add_argument("--skip-tokenizer", action="store_true", help="no PTB tokenizer row (the Java side takes ~4 s a call)")
    args = parser.parse_args()
    load_before = uptime()
    raw_pred, raw_refs = build_set(args.images, args.refs)
    ids = list(raw_pred)
    if args.wide_vocab:
        rng = random.Random(1)
        raw_pred = dict(zip(ids, widen_vocabulary([raw_pred[i] for i in ids], rng)))
        raw_refs = {i: widen_vocabulary(raw_refs[i], rng) for i in ids}
    java_input = {i: [{"caption": c} for c in [raw_pred[i], *raw_refs[i]]] for i in ids}
    java_tok = PTBTokenizer().tokenize(java_input)
    preds = {i: java_tok[i][0] for i in ids}
    refs = {i: java_tok[i][1:] for i in ids}
    gts, res = refs, {i: [preds[i]] for i in ids}
    vocabulary = len({w for caps in java_tok.values() for c in caps for w in c.split()})

    def peer_all() -> tuple:
        return Bleu(4).compute_score(gts, res, verbose=0)[0], Rouge().compute_score(gts, res)[0], Cider().compute_score(gts, res)[0]

    pairs: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {}
    if not args.skip_tokenizer:
        pairs["PTB tokenizer"] = (lambda: {i: [ptb_tokenize(c) for c in [raw_pred[i], *raw_refs[i]]] for i in ids},
                                  lambda: PTBTokenizer().tokenize(java_input))
    pairs["BLEU-1..4"] = (lambda: bleu(preds, refs)[0], lambda: Bleu(4).compute_score(gts, res, verbose=0)[0])
    pairs["ROUGE-L"] = (lambda: rouge_l(preds, refs)[0], lambda: Rouge().compute_score(gts, res)[0])
    pairs["CIDEr-D"] = (lambda: cider_d(preds, refs)[0], lambda: Cider().compute_score(gts, res)[0])
    pairs["all three, one call"] = (lambda: evaluate_captions(preds, refs, tokenize=False), peer_all)
    measured = interleaved(pairs, args.repeats)
    load_after = uptime()

    rows = []
    scores: dict[str, tuple[float, float]] = {}
    if "PTB tokenizer" in measured:
        ours_s, java_s, ours_tok, java_out = measured["PTB tokenizer"]
        total = sum(len(v) for v in java_out.values())
        same = total - sum(a != b for i in ids for a, b in zip(ours_tok[i], java_out[i]))
        rows.append(("PTB tokenizer", ours_s, java_s, f"{same}/{total} same", ""))
    ours_s, ref_s, ours_b, ref_b = measured["BLEU-1..4"]
    scores.update({f"bleu_{k + 1}": (ours_b[k], ref_b[k]) for k in range(4)})
    rows.append(("BLEU-1..4", ours_s, ref_s, f"{ours_b[3]:.6f}", f"{ref_b[3]:.6f}"))
    ours_s, ref_s, ours_r, ref_r = measured["ROUGE-L"]
    scores["rouge_l"] = (ours_r, float(ref_r))
    rows.append(("ROUGE-L", ours_s, ref_s, f"{ours_r:.6f}", f"{ref_r:.6f}"))
    ours_s, ref_s, ours_c, ref_c = measured["CIDEr-D"]
    scores["cider"] = (ours_c, float(ref_c))
    rows.append(("CIDEr-D", ours_s, ref_s, f"{ours_c:.6f}", f"{ref_c:.6f}"))
    ours_s, ref_s, all_scores, ref_all = measured["all three, one call"]
    rows.append(("all three, one call", ours_s, ref_s, f"cider {all_scores['cider']:.6f}", f"cider {float(ref_all[2]):.6f}"))

    for name, (ours, ref) in scores.items():
        assert abs(ours - ref) < 1e-12, (name, ours, ref)
        assert abs(all_scores[name] - ref) < 1e-12, (name, all_scores[name], ref)

    print(f"{args.images} images x {args.refs} references (+1 candidate each), {vocabulary} distinct words; "
          f"median of {args.repeats} interleaved rounds; wall seconds; {os.cpu_count()} CPUs")
    print(f"uptime load before: {load_before}   after: {load_after}")
    print(f"{'step':<22}{'vlp s':>9}{'pycocoevalcap s':>17}{'ratio':>8}   {'vlp':<18}{'pycocoevalcap'}")
    for name, ours, ref, a, b in rows:
        print(f"{name:<22}{ours:>9.4f}{ref:>17.3f}{ref / ours:>7.1f}x   {a:<18}{b}")
    record = {
        "bench": "caption_metrics", "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "images": args.images, "refs": args.refs,
        "repeats": args.repeats, "vocabulary": vocabulary, "interleaved": True, "machine": platform.node(),
        "numpy": np.__version__, "load_before": load_before, "load_after": load_after, "cpus": os.cpu_count(),
        "seconds": {name: {"vlp": round(ours, 5), "pycocoevalcap": round(ref, 4)} for name, ours, ref, _, _ in rows},
        "scores": {k: {"vlp": v[0], "pycocoevalcap": v[1]} for k, v in scores.items()},
    }
    if "PTB tokenizer" in measured:
        record["tokenizer_same"] = rows[0][3].split()[0]
    with open(Path(__file__).resolve().parent / "results.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
