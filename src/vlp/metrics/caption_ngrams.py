"""Integer n-gram tables of the references for CIDEr-D, and the sort helpers of the caption metrics.

pycocoevalcap builds one Python dict of n-gram tuples per sentence and walks them in Python; on
5,000 images x 5 references that is about a million dict operations. Here every word gets an integer
id, every n-gram of order k gets a dense id built from the id of its (k-1)-gram prefix and its last
word (one sort per order over all sentences at once), and the per-reference counts live in one
[rows, max_refs] matrix whose rows are distinct (image, n-gram) pairs. Candidates are matched against
that table with `searchsorted`, so CIDEr-D's tf-idf dot products come from arrays, and the reference
side can be built once and reused for many candidate batches (SCST rewards). (BLEU needs no document
frequencies and no reusable reference side: `caption_bleu` counts with one sort per order instead.)

Sentences are split on whitespace (`str.split()`), exactly as pycocoevalcap's CIDEr does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def _sorted_with_order(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(keys sorted, the permutation that sorts them). Non-negative keys with room for the index in the
    low bits are sorted as one packed int64 array: `np.sort` is ~4x faster than `np.argsort` here."""
    bits = max(int(keys.size - 1).bit_length(), 1)
    if keys.size and int(keys.min()) >= 0 and int(keys.max()) < (1 << (62 - bits)):
        packed = np.left_shift(keys, bits)  # in place from here: fresh pages cost as much as the sort
        packed |= np.arange(keys.size, dtype=np.int64)
        packed.sort()
        order = packed & ((1 << bits) - 1)
        packed >>= bits
        return packed, order
    order = np.argsort(keys)
    return keys[order], order


def _densify(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted unique keys, inverse) -- `np.unique(return_inverse=True)` via one sort, which is several
    times faster than numpy's own implementation for ~1M int64 keys."""
    if keys.size == 0:
        return keys.copy(), np.zeros(0, dtype=np.int64)
    ordered, order = _sorted_with_order(keys)
    new = np.empty(keys.size, dtype=bool)
    new[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=new[1:])
    rank = np.cumsum(new)
    rank -= 1
    inverse = np.empty(keys.size, dtype=np.int64)
    inverse[order] = rank
    return ordered[new], inverse


def _densify_grouped(pairs: np.ndarray, group: np.ndarray, num_groups: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Dense ids of n-gram keys `pairs` and of (n-gram, group) rows, from ONE sort where the combined key
    fits in int64: (sorted unique pair keys, n-gram id per item, sorted row keys n-gram id * num_groups +
    group, row id per item)."""
    if pairs.size == 0 or int(pairs.max()) >= (1 << 62) // max(num_groups, 1):  # rare: two sorts
        table, dense = _densify(pairs)
        row_keys, rows = _densify(dense * num_groups + group)
        return table, dense, row_keys, rows
    ordered, order = _sorted_with_order(pairs * num_groups + group)
    pair_sorted = ordered // num_groups
    new_row = np.empty(ordered.size, dtype=bool)
    new_row[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=new_row[1:])
    new_pair = np.empty(ordered.size, dtype=bool)
    new_pair[0] = True
    np.not_equal(pair_sorted[1:], pair_sorted[:-1], out=new_pair[1:])
    dense_sorted = np.cumsum(new_pair) - 1
    dense = np.empty(ordered.size, dtype=np.int64)
    dense[order] = dense_sorted
    rows = np.empty(ordered.size, dtype=np.int64)
    rows[order] = np.cumsum(new_row) - 1
    row_keys = dense_sorted[new_row] * num_groups + (ordered[new_row] - pair_sorted[new_row] * num_groups)
    return pair_sorted[new_pair], dense, row_keys, rows


def split_sentences(sentences: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """All whitespace-split words of `sentences` in order, and the number of words per sentence."""
    try:  # one join + split creates no per-sentence lists that outlive their length count
        lengths = np.fromiter(map(len, map(str.split, sentences)), dtype=np.int64, count=len(sentences))
    except TypeError:
        bad = next(s for s in sentences if not isinstance(s, str))
        raise TypeError(f"captions must be strings, got {type(bad).__name__}: {bad!r}") from None
    return " ".join(sentences).split(), lengths


@dataclass
class SentenceNgrams:
    """The n-grams of a batch of sentences: for order k (index k-1), the sentence of every occurrence
    and the dense id of the n-gram (ids below the vocabulary's count for that order are known n-grams;
    larger ids are new ones, distinct among themselves)."""

    lengths: np.ndarray  # [S] words per sentence
    sentence: list[np.ndarray]  # per order: [occurrences] sentence index
    ids: list[np.ndarray]  # per order: [occurrences] n-gram id
    rows: list[np.ndarray] | None = None  # per order, with groups: [occurrences] (n-gram, group) row
    row_keys: list[np.ndarray] | None = None  # per order, with groups: sorted n-gram id * groups + group


class NgramVocabulary:
    """Word ids and per-order n-gram ids, fixed by the sentences it was built from (the references).

    `encode` maps other sentences onto the same ids; words and n-grams it has never seen get fresh ids
    above the known ones, so they still count correctly within a candidate (CIDEr-D's norms need them)
    but can never match a reference.
    """

    def __init__(self, sentences: Sequence[str], n: int = 4, groups: np.ndarray | None = None) -> None:
        """`groups` (one int per sentence, e.g. its image) also numbers the distinct (n-gram, group) rows."""
        if n < 1:
            raise ValueError(f"n-gram order must be >= 1, got {n}")
        self.n = n
        words, lengths = split_sentences(sentences)
        self.words: dict[str, int] = {w: i for i, w in enumerate(dict.fromkeys(words))}  # first-seen order
        token_ids = np.fromiter(map(self.words.__getitem__, words), dtype=np.int64, count=len(words))
        self.tables: list[np.ndarray] = []  # per order >= 2: sorted keys prefix_id * V + word_id
        self.counts: list[int] = [len(self.words)]
        groups = np.zeros(lengths.size, dtype=np.int64) if groups is None else np.asarray(groups, dtype=np.int64)
        self.reference = self._build(token_ids, lengths, groups)

    def _build(self, token_ids: np.ndarray, lengths: np.ndarray, groups: np.ndarray) -> SentenceNgrams:
        vocab = len(self.words)
        num_groups = int(groups.max()) + 1 if groups.size else 1
        sentence_of, remaining = _positions(lengths)
        row_keys, rows = _densify(token_ids * num_groups + groups[sentence_of])
        out = SentenceNgrams(lengths, [sentence_of], [token_ids], [rows], [row_keys])
        previous = token_ids
        for k in range(2, self.n + 1):
            valid = np.flatnonzero(remaining >= k)  # k-grams start where >= k words remain
            keys = previous[valid] * vocab + token_ids[valid + k - 1]  # (prefix (k-1)-gram, last word)
            sentence = sentence_of[valid]
            table, dense, row_keys, rows = _densify_grouped(keys, groups[sentence], num_groups)
            self.tables.append(table)
            self.counts.append(table.size)
            full = np.full(token_ids.size, -1, dtype=np.int64)
            full[valid] = dense
            previous = full
            for field, value in zip((out.sentence, out.ids, out.rows, out.row_keys), (sentence, dense, rows, row_keys)):
                field.append(value)
        return out

    def encode(self, sentences: Sequence[str]) -> SentenceNgrams:
        """N-gram ids of `sentences` in this vocabulary (unknown words/n-grams get fresh ids)."""
        words, lengths = split_sentences(sentences)
        known = len(self.words)
        token_ids = np.fromiter((self.words.get(w, -1) for w in words), dtype=np.int64, count=len(words))
        unknown = np.flatnonzero(token_ids < 0)
        if unknown.size:
            fresh: dict[str, int] = {}
            for i in unknown.tolist():
                token_ids[i] = fresh.setdefault(words[i], known + len(fresh))
        total_words = known + (len(fresh) if unknown.size else 0)
        sentence_of, remaining = _positions(lengths)
        sentences_out, ids = [sentence_of], [token_ids]
        previous = token_ids
        for k in range(2, self.n + 1):
            valid = np.flatnonzero(remaining >= k)
            prefix = previous[valid]
            last = token_ids[valid + k - 1]
            table = self.tables[k - 2]
            dense = np.full(valid.size, -1, dtype=np.int64)
            lookup = (prefix < self.counts[k - 2]) & (last < known)
            if table.size and lookup.any():
                keys = prefix[lookup] * known + last[lookup]
                at = np.minimum(np.searchsorted(table, keys), table.size - 1)
                dense[np.flatnonzero(lookup)] = np.where(table[at] == keys, at, -1)
            missing = np.flatnonzero(dense < 0)
            if missing.size:  # new n-grams: ids above the known ones, equal for equal n-grams
                _, inverse = _densify(prefix[missing] * total_words + last[missing])
                dense[missing] = self.counts[k - 1] + inverse
            full = np.full(token_ids.size, -1, dtype=np.int64)
            full[valid] = dense
            previous = full
            sentences_out.append(sentence_of[valid])
            ids.append(dense)
        return SentenceNgrams(lengths, sentences_out, ids)


def _positions(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per word: its sentence index and how many words remain in the sentence from it (itself included)."""
    total = int(lengths.sum())
    sentence_of = np.repeat(np.arange(lengths.size, dtype=np.int64), lengths)
    starts = np.cumsum(lengths) - lengths
    offset = np.arange(total, dtype=np.int64) - np.repeat(starts, lengths)
    return sentence_of, lengths[sentence_of] - offset


@dataclass
class CandidateNgrams:
    """One order's distinct (candidate, n-gram) pairs: term frequency, document frequency of the n-gram
    in the references (0 for unseen ones) and the matching (image, n-gram) row of the reference table
    (-1 where the candidate's image has no reference with that n-gram)."""

    candidate: np.ndarray
    tf: np.ndarray
    df: np.ndarray
    row: np.ndarray


class ReferenceTable:
    """The n-gram counts of every image's references, built once; `match` looks candidates up in it.

    For order k, row r of `counts[k-1]` is one (image, n-gram) pair that occurs in some reference of the
    image, and column j holds how often it occurs in the image's j-th reference. `doc_freq[k-1][g]` is
    the number of images whose references contain n-gram g (CIDEr's document frequency).
    """

    def __init__(self, references: Sequence[Sequence[str]], n: int = 4) -> None:
        num_refs = np.fromiter((len(r) for r in references), dtype=np.int64, count=len(references))
        if num_refs.size and int(num_refs.min()) == 0:
            raise ValueError(f"image {int(np.argmin(num_refs))} has no reference captions")
        self.n = n
        self.num_images = len(references)
        self.num_refs = num_refs
        self.max_refs = int(num_refs.max()) if num_refs.size else 1
        flat = [s for refs in references for s in refs]
        ref_image = np.repeat(np.arange(self.num_images, dtype=np.int64), num_refs)
        self.vocab = NgramVocabulary(flat, n, groups=ref_image)
        ref_slot = np.arange(ref_image.size, dtype=np.int64) - np.repeat(np.cumsum(num_refs) - num_refs, num_refs)
        self.ref_lengths = np.full((self.num_images, self.max_refs), -1, dtype=np.int64)  # -1: no such reference
        self.ref_lengths[ref_image, ref_slot] = self.vocab.reference.lengths
        self.row_keys: list[np.ndarray] = []
        self.row_image: list[np.ndarray] = []
        self.row_ngram: list[np.ndarray] = []
        self.counts: list[np.ndarray] = []
        self.doc_freq: list[np.ndarray] = []
        width = max(self.num_images, 1)
        reference = self.vocab.reference
        for k in range(n):
            keys, row, sentence = reference.row_keys[k], reference.rows[k], reference.sentence[k]
            counts = np.bincount(row * self.max_refs + ref_slot[sentence], minlength=keys.size * self.max_refs)
            self.row_keys.append(keys)  # sorted n-gram id * num_images + image
            self.row_image.append(keys % width)
            self.row_ngram.append(keys // width)
            self.counts.append(counts.reshape(keys.size, self.max_refs))
            self.doc_freq.append(np.bincount(keys // width, minlength=self.vocab.counts[k]))

    def match(self, image_index: np.ndarray, candidates: Sequence[str]) -> tuple[np.ndarray, list[CandidateNgrams]]:
        """(words per candidate, per-order matches) for candidates of the images `image_index`."""
        encoded = self.vocab.encode(candidates)
        out = []
        for k in range(self.n):
            sentence, ngram = encoded.sentence[k], encoded.ids[k]
            width = int(ngram.max()) + 1 if ngram.size else 1
            keys, inverse = _densify(sentence * width + ngram)
            tf = np.bincount(inverse, minlength=keys.size)
            cand, ngram_u = keys // width, keys % width
            known = self.vocab.counts[k]
            df = np.zeros(keys.size, dtype=np.int64)
            row = np.full(keys.size, -1, dtype=np.int64)
            is_known = np.flatnonzero(ngram_u < known)
            df[is_known] = self.doc_freq[k][ngram_u[is_known]]
            table = self.row_keys[k]
            if table.size and is_known.size:
                lookup = ngram_u[is_known] * max(self.num_images, 1) + image_index[cand[is_known]]
                at = np.minimum(np.searchsorted(table, lookup), table.size - 1)
                row[is_known] = np.where(table[at] == lookup, at, -1)
            out.append(CandidateNgrams(cand, tf, df, row))
        return encoded.lengths, out
