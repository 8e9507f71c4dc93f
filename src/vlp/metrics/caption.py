"""COCO caption metrics without Java: BLEU-1..4, ROUGE-L and CIDEr-D, equal to pycocoevalcap's numbers.

Why our own code rather than calling pycocoevalcap: its BLEU, ROUGE-L and CIDEr walk Python dicts of
n-gram tuples and DP tables (~3 s for 5,000 images x 5 references; CIDEr recomputes every reference
vector for every evaluation), its tokenizer and METEOR/SPICE start a Java subprocess, and it is an
optional dependency. Here words become integers from the captions' bytes (`caption_words`); BLEU's
clipped counts come from one sort per n-gram order (`caption_bleu`); ROUGE-L's LCS runs bit-parallel
over all pairs (`caption_rouge`); CIDEr-D keeps integer n-gram tables of the references
(`caption_ngrams`) in a `CiderD` object that scores many candidate batches (SCST rewards); the PTB
tokenisation is pure Python (`caption_tokenize`). Parity with pycocoevalcap is tested to 1e-12 in
tests/parity/test_pycocoevalcap.py.

Scales are pycocoevalcap's: BLEU, ROUGE-L and METEOR in [0, 1], CIDEr-D x10 (COCO convention).
METEOR and SPICE exist only through pycocoevalcap + Java (`caption_java`); when unavailable they are
reported as NaN with a warning that says why, never silently dropped.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Mapping, Sequence

import numpy as np

from vlp.metrics.caption_bleu import bleu_scores
from vlp.metrics.caption_ngrams import CandidateNgrams, ReferenceTable
from vlp.metrics.caption_rouge import rouge_l_scores
from vlp.metrics.caption_tokenize import ptb_tokenize

METRICS = ("bleu", "rouge", "cider", "meteor", "spice")


def _aligned(predictions: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]]) -> tuple[list[Hashable], list[str], list[list[str]]]:
    """Image ids (prediction order), candidates and their references; clear errors for bad input.

    References of images without a prediction are ignored, as COCOEvalCap evaluates the predicted ids.
    """
    ids = list(predictions)
    if not ids:
        raise ValueError("no predictions to evaluate")
    missing = [i for i in ids if i not in references]
    if missing:
        raise ValueError(f"{len(missing)} predicted image id(s) have no references, e.g. {missing[:5]}")
    cands, refs = [], []
    for i in ids:
        pred, ref = predictions[i], references[i]
        if not isinstance(pred, str):
            raise TypeError(f"prediction for image {i!r} must be one string, got {type(pred).__name__}")
        if isinstance(ref, str) or not isinstance(ref, Sequence):
            raise TypeError(f"references for image {i!r} must be a list of strings, got {type(ref).__name__}")
        if len(ref) == 0:
            raise ValueError(f"image {i!r} has an empty reference list")
        cands.append(pred)
        refs.append(list(ref))
    return ids, cands, refs


class CiderD:
    """CIDEr-D (clipped tf-idf n-gram cosine with a Gaussian length penalty, x10), pycocoevalcap's `Cider`.

    Document frequencies come from `references` (an image id -> captions mapping, already tokenised);
    build it once and call `score` for many candidate batches, e.g. SCST rewards. pycocoevalcap's
    corpus score equals `CiderD(references).compute_score(predictions)` with the same ids in both.
    """

    def __init__(self, references: Mapping[Hashable, Sequence[str]], n: int = 4, sigma: float = 6.0) -> None:
        self.image_ids = list(references)
        if not self.image_ids:
            raise ValueError("CiderD needs references for at least one image")
        self.index = {image_id: i for i, image_id in enumerate(self.image_ids)}
        self.sigma = sigma
        self.table = ReferenceTable([list(references[i]) for i in self.image_ids], n)
        t = self.table
        self.n = t.n
        self.log_num_images = np.log(float(max(t.num_images, 1)))
        self.idf = [self.log_num_images - np.log(np.maximum(1.0, df)) for df in t.doc_freq]
        norm2 = np.zeros((t.num_images, t.max_refs, t.n))
        for k in range(t.n):
            weight = t.counts[k] * self.idf[k][t.row_ngram[k]][:, None]  # [rows, R] tf-idf per reference
            for j in range(t.max_refs):
                norm2[:, j, k] = np.bincount(t.row_image[k], weights=weight[:, j] ** 2, minlength=t.num_images)
        self.ref_norm = np.sqrt(norm2)
        self.ref_bigrams = np.maximum(t.ref_lengths - 1, 0)  # pycocoevalcap's "length" counts 2-grams

    def image_index(self, image_ids: Sequence[Hashable]) -> np.ndarray:
        try:
            return np.fromiter((self.index[i] for i in image_ids), dtype=np.int64, count=len(image_ids))
        except KeyError as err:
            raise ValueError(f"image id {err.args[0]!r} has no references in this CiderD") from None

    def score(self, image_ids: Sequence[Hashable], candidates: Sequence[str]) -> np.ndarray:
        """CIDEr-D of each candidate (tokenised, space separated) against the references of its image."""
        if len(image_ids) != len(candidates):
            raise ValueError(f"{len(image_ids)} image ids but {len(candidates)} candidates")
        index = self.image_index(image_ids)
        lengths, matches = self.table.match(index, candidates)
        return self.score_matches(index, lengths, matches)

    def score_matches(self, image_index: np.ndarray, lengths: np.ndarray, matches: list[CandidateNgrams]) -> np.ndarray:
        t, count = self.table, lengths.size
        norm_c2 = np.zeros((count, t.n))
        dot = np.zeros((count, t.max_refs, t.n))
        for k, m in enumerate(matches):
            idf = self.log_num_images - np.log(np.maximum(1.0, m.df))
            weight = m.tf * idf
            norm_c2[:, k] = np.bincount(m.candidate, weights=weight**2, minlength=count)
            hit = np.flatnonzero(m.row >= 0)
            ref_weight = t.counts[k][m.row[hit]] * idf[hit, None]  # [H, R]
            clipped = np.minimum(weight[hit, None], ref_weight) * ref_weight
            for j in range(t.max_refs):
                dot[:, j, k] = np.bincount(m.candidate[hit], weights=clipped[:, j], minlength=count)
        norm_c = np.sqrt(norm_c2)[:, None, :]
        norm_r = self.ref_norm[image_index]
        both = (norm_c != 0) & (norm_r != 0)
        val = np.where(both, dot / np.where(both, norm_c * norm_r, 1.0), dot)
        bigrams = np.maximum(lengths - 1, 0) if t.n >= 2 else np.zeros_like(lengths)
        ref_bigrams = self.ref_bigrams[image_index] if t.n >= 2 else np.zeros_like(self.ref_bigrams[image_index])
        delta = (bigrams[:, None] - ref_bigrams).astype(np.float64)
        val = val * (np.e ** (-(delta**2) / (2 * self.sigma**2)))[:, :, None]
        return val.sum(axis=1).mean(axis=1) / t.num_refs[image_index] * 10.0

    def compute_score(self, predictions: Mapping[Hashable, str]) -> tuple[float, np.ndarray]:
        """(mean, per-image scores in prediction order), like pycocoevalcap's `Cider.compute_score`."""
        scores = self.score(list(predictions), list(predictions.values()))
        return float(scores.mean()) if scores.size else 0.0, scores


def bleu(predictions: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]], n: int = 4) -> tuple[list[float], np.ndarray]:
    """(corpus BLEU-1..n, per-image [I, n]) on tokenised captions, pycocoevalcap's `Bleu.compute_score`."""
    _, cands, refs = _aligned(predictions, references)
    return bleu_scores(cands, refs, n)


def cider_d(predictions: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]], n: int = 4, sigma: float = 6.0) -> tuple[float, np.ndarray]:
    """(corpus CIDEr-D, per-image) on tokenised captions, pycocoevalcap's `Cider.compute_score`."""
    ids, cands, refs = _aligned(predictions, references)
    return CiderD(dict(zip(ids, refs)), n, sigma).compute_score(dict(zip(ids, cands)))


def rouge_l(predictions: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]], beta: float = 1.2) -> tuple[float, np.ndarray]:
    """(mean ROUGE-L, per-image) on tokenised captions, pycocoevalcap's `Rouge.compute_score`."""
    _, cands, refs = _aligned(predictions, references)
    scores = rouge_l_scores(cands, refs, beta)
    return float(scores.mean()) if scores.size else 0.0, scores


def evaluate_captions(
    predictions: Mapping[Hashable, str],
    references: Mapping[Hashable, Sequence[str]],
    metrics: Sequence[str] = ("bleu", "rouge", "cider"),
    tokenize: bool = True,
) -> dict[str, float]:
    """COCO caption metrics of one caption per image against its references, as COCOEvalCap reports them.

    Keys: bleu_1..bleu_4, rouge_l, cider, meteor, spice (those asked for). With `tokenize`, captions go
    through the pure-Python PTB tokenizer first (what COCOEvalCap does with Java); pass False for
    captions that are already tokenised. METEOR/SPICE need Java + pycocoevalcap; without them the value
    is NaN and a warning says "<metric>: unavailable (...)".
    """
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown caption metric(s) {unknown}; choose from {list(METRICS)}")
    ids, cands, refs = _aligned(predictions, references)
    if tokenize:
        cands = [ptb_tokenize(c) for c in cands]
        refs = [[ptb_tokenize(r) for r in rs] for rs in refs]
    result: dict[str, float] = {}
    if "bleu" in metrics:
        corpus, _ = bleu_scores(cands, refs, 4)
        result.update({f"bleu_{k + 1}": float(b) for k, b in enumerate(corpus)})
    if "cider" in metrics:
        scores = CiderD(dict(zip(ids, refs))).score(ids, cands)
        result["cider"] = float(scores.mean()) if scores.size else 0.0
    if "rouge" in metrics:
        result["rouge_l"] = float(rouge_l_scores(cands, refs).mean()) if cands else 0.0
    for name in ("meteor", "spice"):
        if name in metrics:
            from vlp.metrics.caption_java import java_metric

            value, reason = java_metric(name, cands, refs)
            if reason is not None:
                warnings.warn(f"{name}: unavailable ({reason})", stacklevel=2)
            result[name] = value
    return result
