"""BLEU-1..n as pycocoevalcap computes it (corpus score, closest reference length, per-sentence scores).

pycocoevalcap builds a dict of n-gram tuples for every sentence and walks them in Python (~0.6 s for
5,000 images x 5 references). BLEU only needs, per candidate and order k, the clipped count: the sum
over its k-grams of min(count in the candidate, max count in one reference of its image). Here every
word position of every sentence (candidates and references together) gets, per order, one integer
code (image, k-gram starting there, slot of its sentence in the image); after one `np.sort` of the
codes, equal codes are runs (a k-gram's count in one sentence) and each (image, k-gram) is a group of
runs with the candidate's first, so the clip is a few vector operations on the runs, without any
per-n-gram Python. Codes are built word by word (code << width | next word), the image on top.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from vlp.metrics.caption_ngrams import _densify
from vlp.metrics.caption_words import CaptionWords, caption_words

_TINY, _SMALL = 1e-15, 1e-9  # pycocoevalcap's BLEU smoothing constants
_CODE_BITS = 62  # codes stay non-negative int64 with a bit to spare


def bleu_scores(candidates: Sequence[str], references: Sequence[Sequence[str]], n: int = 4) -> tuple[list[float], np.ndarray]:
    """(corpus BLEU-1..n, per-candidate BLEU [C, n]) of each candidate against its reference list,
    equal to pycocoevalcap's `Bleu(n).compute_score` (option "closest"); words are `str.split()`."""
    if n < 1:
        raise ValueError(f"n-gram order must be >= 1, got {n}")
    captions = caption_words(candidates, references)
    count, words = captions.count, captions.words
    if count == 0:
        return [0.0] * n, np.zeros((0, n))
    max_refs = int(captions.num_refs.max())
    correct = clipped_counts(captions, n)
    ref_len = np.full((count, max_refs), -1, dtype=np.int64)  # -1: no such reference
    ref_len[captions.image[count:], captions.slot[count:] - 1] = words.lengths[count:]
    return bleu_from_counts(correct, words.lengths[:count], ref_len)


def clipped_counts(captions: CaptionWords, n: int) -> np.ndarray:
    """[images, n] sum over each image's candidate k-grams of min(candidate count, max reference count).

    Each sentence is followed by an end marker whose id (vocabulary size + slot) no other sentence of
    the image has, so an n-gram that runs past its sentence equals no other n-gram of the image and
    counts nothing: no per-order masking. For each order, every position gets the code
    (image, k-gram, slot) and one `np.sort` turns each (image, k-gram) into a group of runs, one run
    per slot that has it, the candidate's first.
    """
    words, image, slot, num_images = captions.words, captions.image, captions.slot, captions.count
    num_slots = int(captions.num_refs.max()) + 1
    lengths = words.lengths
    ids, vocab = words.ids, words.vocab_size
    image_bits = max(num_images - 1, 1).bit_length()
    slot_bits = max(num_slots - 1, 1).bit_length()
    if image_bits + n * (vocab + num_slots - 1).bit_length() + slot_bits > _CODE_BITS:
        # Wide vocabulary (real COCO has ~10k words): number words within their image instead (~60 each).
        width = max(vocab - 1, 1).bit_length()
        local, bits = _rank_within_image((np.repeat(image, lengths) << width) | ids, width, num_images)
        ids = local & ((1 << bits) - 1)
        vocab = int(ids.max()) + 1
    total = int(lengths.sum()) + lengths.size
    markers = np.cumsum(lengths + 1) - 1
    layout = np.zeros(total + n, dtype=np.int64)  # words, an end marker per sentence, padding
    is_word = np.ones(total, dtype=bool)
    is_word[markers] = False
    layout[:total][is_word] = ids
    layout[markers] = vocab + slot
    width = max(vocab + num_slots - 1, 1).bit_length()
    position_slot = np.repeat(slot, lengths + 1)
    gram = np.repeat(image, lengths + 1)  # (image, k-gram starting here) as one code, the image on top
    gram_bits = 0  # bits below the image
    correct = np.zeros((num_images, n))
    code = np.empty(total + 1, dtype=np.int64)
    code[total] = np.iinfo(np.int64).max  # a sentinel run after the last group
    for k in range(1, n + 1):
        if image_bits + gram_bits + width + slot_bits > _CODE_BITS:  # thousands of words per image: rank the (k-1)-grams
            gram, gram_bits = _rank_within_image(gram, gram_bits, num_images)
            if image_bits + gram_bits + width + slot_bits > 63:
                raise ValueError(f"{num_images} images with up to {1 << gram_bits} distinct {k - 1}-grams each do not fit int64 codes")
        gram <<= width  # in place: fresh pages for new arrays cost as much as the arithmetic
        gram |= layout[k - 1 : k - 1 + total]
        gram_bits += width
        np.left_shift(gram, slot_bits, out=code[:total])
        code[:total] |= position_slot
        code.sort()
        correct[:, k - 1] = _clipped_per_image(code, slot_bits, gram_bits, num_slots - 1, num_images)
    return correct


def _rank_within_image(gram: np.ndarray, gram_bits: int, num_images: int) -> tuple[np.ndarray, int]:
    """The same (image, gram) codes with fewer bits: the image on top of the gram's rank within its image."""
    keys, rank = _densify(gram)
    image = gram >> gram_bits
    first = np.searchsorted(keys >> gram_bits, np.arange(num_images))  # first rank of each image
    local = rank - first[image]
    bits = max(int(local.max()), 1).bit_length()
    return (image << bits) | local, bits


def _clipped_per_image(code: np.ndarray, slot_bits: int, gram_bits: int, max_refs: int, num_images: int) -> np.ndarray:
    """Sum per image of min(candidate count, max reference count) over its k-grams, from sorted codes
    that end with a sentinel. Runs of equal codes are (image, k-gram, slot) counts; a candidate run
    (slot 0) is the first of its (image, k-gram) group and the references are the <= `max_refs` after it."""
    new = np.empty(code.size, dtype=bool)
    new[:1] = True
    np.not_equal(code[1:], code[:-1], out=new[1:])
    run_start = np.flatnonzero(new)
    run_len = np.diff(run_start, append=code.size)
    run_key = code[run_start]
    cand = np.flatnonzero((run_key & ((1 << slot_bits) - 1)) == 0)
    group = run_key >> slot_bits  # (image, k-gram)
    cand_group = group[cand]
    last = run_key.size - 1  # the sentinel's run: never in a group
    # Most candidate k-grams occur once: then the clip is 1 iff some reference has it (the next run).
    clipped = (group[np.minimum(cand + 1, last)] == cand_group).astype(np.int64)
    repeated = np.flatnonzero(run_len[cand] > 1)
    if repeated.size:
        at, at_group = cand[repeated], cand_group[repeated]
        best_ref = np.zeros(at.size, dtype=np.int64)
        for j in range(1, max_refs + 1):
            after = np.minimum(at + j, last)
            np.maximum(best_ref, np.where(group[after] == at_group, run_len[after], 0), out=best_ref)
        clipped[repeated] = np.minimum(run_len[at], best_ref)
    return np.bincount(cand_group >> gram_bits, weights=clipped, minlength=num_images)


def bleu_from_counts(correct: np.ndarray, lengths: np.ndarray, ref_len: np.ndarray) -> tuple[list[float], np.ndarray]:
    """Corpus and per-candidate BLEU from clipped counts [C, n], candidate lengths [C] and reference
    lengths [C, R] (-1 where a candidate has fewer references), in pycocoevalcap's order of operations."""
    count, n = correct.shape
    guess = np.maximum(0, lengths[:, None] - np.arange(n)[None, :]).astype(np.float64)
    distance = np.where(ref_len >= 0, np.abs(ref_len - lengths[:, None]), 1 << 40)  # x 2**20 below still fits int64
    closest = np.argmin(distance * (1 << 20) + ref_len, axis=1)  # ties: the shorter reference
    reflen = ref_len[np.arange(count), closest]
    per_image = np.cumprod((correct + _TINY) / (guess + _SMALL), axis=1) ** (1.0 / np.arange(1, n + 1))
    ratio = (lengths + _TINY) / (reflen + _SMALL)
    short = ratio < 1
    per_image[short] *= np.exp(1 - 1 / ratio[short])[:, None]
    total_test, total_ref = int(lengths.sum()), int(reflen.sum())
    corpus, product = [], 1.0
    for k in range(n):
        product *= float(correct[:, k].sum() + _TINY) / (float(guess[:, k].sum()) + _SMALL)
        corpus.append(product ** (1.0 / (k + 1)))
    ratio_all = (total_test + _TINY) / (total_ref + _SMALL)
    if ratio_all < 1:
        corpus = [b * math.exp(1 - 1 / ratio_all) for b in corpus]
    return corpus, per_image
