"""ROUGE-L as pycocoevalcap computes it (Lin & Hovy; beta = 1.2), with all LCS lengths at once.

pycocoevalcap fills one Python DP table per (candidate, reference) pair: ~25,000 tables of ~10x10 cells
for COCO-5k, about half a second. Here words are integers (`caption_words`) and the LCS of every pair
runs in parallel with the bit-vector algorithm of Hyyro (2004): the candidate's word positions are the
bits of one uint64, so the match mask of a reference word is the OR of the bits where the image's
candidate has that word, and each step (one word of every reference) updates all pairs with four numpy
operations. Candidates longer than 64 words (none in COCO) take the same algorithm on Python ints.

Like pycocoevalcap, sentences are split on single spaces (`str.split(" ")`), so an empty caption is one
empty word, and per image the best precision and the best recall over the references are combined.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vlp.metrics.caption_ngrams import _densify
from vlp.metrics.caption_words import caption_words

_MAX_BITS = 64
_BYTE_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)


def _popcount(x: np.ndarray) -> np.ndarray:
    """Set bits per uint64 (`np.bitwise_count` exists from numpy 2.0; the project allows 1.24)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x).astype(np.int64)
    return _BYTE_POPCOUNT[x.view(np.uint8).reshape(-1, 8)].sum(axis=1)


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Longest common subsequence length by plain dynamic programming (the test oracle)."""
    if len(a) < len(b):
        a, b = b, a
    row = [0] * (len(b) + 1)
    for x in a:
        diagonal = 0
        for j, y in enumerate(b, start=1):
            above = row[j]
            row[j] = diagonal + 1 if x == y else max(above, row[j - 1])
            diagonal = above
    return row[len(b)]


def _lcs_python_bits(pattern: Sequence[int], text: Sequence[int]) -> int:
    """LCS length by the same bit-vector recurrence on one Python int (any pattern length)."""
    masks: dict[int, int] = {}
    for i, word in enumerate(pattern):
        masks[word] = masks.get(word, 0) | (1 << i)
    full = (1 << len(pattern)) - 1
    v = full
    for word in text:
        u = v & masks.get(word, 0)
        v = ((v + u) | (v - u)) & full
    return len(pattern) - bin(v).count("1")


def _match_masks(ids: np.ndarray, image: np.ndarray, offset: np.ndarray, is_candidate: np.ndarray, vocab: int) -> np.ndarray:
    """Per word position: the bits of its image's candidate positions that hold the same word.

    (image, word) pairs are densified by one sort; each candidate position ORs its bit into its pair.
    """
    _, pair = _densify(image * max(vocab, 1) + ids)
    masks = np.zeros(int(pair.max()) + 1 if pair.size else 0, dtype=np.uint64)
    cand = np.flatnonzero(is_candidate)
    np.bitwise_or.at(masks, pair[cand], np.left_shift(np.uint64(1), offset[cand].astype(np.uint64)))
    return masks[pair]


def _lcs_bit_parallel(match: np.ndarray, ref_len: np.ndarray, ref_start: np.ndarray, cand_len: np.ndarray) -> np.ndarray:
    """LCS length of every (candidate, reference) pair, the candidate having <= 64 words.

    match: per reference word position, the candidate's match mask; ref_start/ref_len: the reference's
    slice of `match`; cand_len: its candidate's length. References are processed longest first, so step
    t only touches the prefix of references that still have a word t.
    """
    by_length = np.argsort(-ref_len, kind="stable")
    lens = ref_len[by_length]
    steps = int(lens[0]) if lens.size else 0
    active = np.searchsorted(-lens, -np.arange(steps), side="left")  # references with > t words
    # Lay the match masks out step by step: step t holds word t of the active references, in length order.
    step_start = np.cumsum(active) - active
    rank = np.empty_like(by_length)
    rank[by_length] = np.arange(by_length.size)
    reference = np.repeat(np.arange(ref_len.size), ref_len)
    t = np.arange(reference.size) - ref_start[reference]
    laid = np.empty(reference.size, dtype=np.uint64)
    laid[step_start[t] + rank[reference]] = match
    v = np.full(lens.size, np.iinfo(np.uint64).max, dtype=np.uint64)
    for step in range(steps):
        n = int(active[step])
        head = v[:n]
        u = head & laid[step_start[step] : step_start[step] + n]
        v[:n] = (head + u) | (head - u)
    length = cand_len[by_length].astype(np.uint64)
    low = np.where(length >= _MAX_BITS, np.iinfo(np.uint64).max, (np.uint64(1) << length) - np.uint64(1))
    lcs = np.empty(lens.size, dtype=np.int64)
    lcs[by_length] = length.astype(np.int64) - _popcount(v & low)
    return lcs


def rouge_l_scores(candidates: Sequence[str], references: Sequence[Sequence[str]], beta: float = 1.2) -> np.ndarray:
    """Per-candidate ROUGE-L F-score against its references (pycocoevalcap's `Rouge.calc_score`)."""
    captions = caption_words(candidates, references, single_space=True)
    count, words = captions.count, captions.words
    if count == 0:
        return np.zeros(0)
    lengths = words.lengths
    cand_len, ref_len = lengths[:count], lengths[count:]
    ref_image = captions.image[count:]
    sentence_start = np.cumsum(lengths) - lengths
    position_sentence = np.repeat(np.arange(lengths.size, dtype=np.int64), lengths)
    offset = np.arange(words.ids.size, dtype=np.int64) - sentence_start[position_sentence]
    is_candidate = position_sentence < count
    short = cand_len <= _MAX_BITS
    if not short.all():  # bits beyond the 64th are not set: those candidates' pairs are redone below
        is_candidate &= short[np.minimum(position_sentence, count - 1)]
    match = _match_masks(words.ids, captions.image[position_sentence], offset, is_candidate, words.vocab_size)
    cand_words = int(cand_len.sum())
    lcs = _lcs_bit_parallel(match[cand_words:], ref_len, sentence_start[count:] - cand_words, cand_len[ref_image])
    for r in np.flatnonzero(~short[ref_image]).tolist():
        c, start = int(ref_image[r]), int(sentence_start[count + r])
        cand_ids = words.ids[sentence_start[c] : sentence_start[c] + cand_len[c]]
        lcs[r] = _lcs_python_bits(cand_ids.tolist(), words.ids[start : start + ref_len[r]].tolist())
    precision = lcs / cand_len[ref_image].astype(np.float64)
    recall = lcs / ref_len.astype(np.float64)
    starts = np.cumsum(captions.num_refs) - captions.num_refs
    prec_max = np.maximum.reduceat(precision, starts)
    rec_max = np.maximum.reduceat(recall, starts)
    both = (prec_max != 0) & (rec_max != 0)
    score = np.zeros(count)
    p, r = prec_max[both], rec_max[both]
    score[both] = ((1 + beta**2) * p * r) / (r + beta**2 * p)
    return score
