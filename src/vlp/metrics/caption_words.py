"""Integer word ids for whitespace-split captions, without a Python string per word.

BLEU, ROUGE-L and CIDEr compare words only for equality, so every word can be an integer. Splitting
30,000 captions into 330,000 Python strings and interning them through a dict costs ~35 ms, more
than all of BLEU's counting. Here the captions are joined with newlines and encoded once; word
boundaries are the positions of the separator bytes, and a word's id comes from its bytes read as
little-endian integers, `_CHUNK` bytes at a time: words that fit one chunk are densified by one sort,
longer ones get their next chunk combined with the id so far, until every word is consumed. Ids are
exact (no hashing): two words get the same id iff their bytes are equal.

The byte path is used when the bytes say the same as `str.split`: no control characters inside a
caption (the newline separator and the zero padding must be unambiguous) and, in whitespace mode, no
non-ASCII whitespace. Anything else takes the Python path, which is `str.split` + a dict.

Two split rules, as pycocoevalcap uses both: `single_space=False` is `str.split()` (BLEU, CIDEr: runs
of whitespace separate, no empty words); `single_space=True` is `str.split(" ")` (ROUGE-L: every space
separates, so "" is one empty word and "a  b" has three).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vlp.metrics.caption_ngrams import _densify

_CHUNK = 5  # bytes per key: 40 bits leave room for the item index in one packed int64 sort
_MASKS = np.array([(1 << (8 * i)) - 1 for i in range(_CHUNK + 1)], dtype=np.uint64)
# Characters `str.split()` treats as whitespace beyond ASCII (tests check the list against str.isspace).
_UNICODE_SPACE = re.compile("[\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]")


@dataclass
class WordIds:
    """Words of a batch of sentences as integers: `ids` [T] in sentence order (equal ids iff equal
    words, every id < `vocab_size`), `lengths` [S] words per sentence."""

    ids: np.ndarray
    lengths: np.ndarray
    vocab_size: int


@dataclass
class CaptionWords:
    """Word ids of candidates followed by their references (image 0's, then image 1's, ...), and for
    every sentence its image and slot (0: the image's candidate, 1..R: its references in order)."""

    words: WordIds
    num_refs: np.ndarray  # [C] references per candidate
    image: np.ndarray  # [C + sum(num_refs)]
    slot: np.ndarray  # [C + sum(num_refs)]

    @property
    def count(self) -> int:
        return self.num_refs.size


def caption_words(candidates: Sequence[str], references: Sequence[Sequence[str]], *, single_space: bool = False) -> CaptionWords:
    """One candidate per reference list, as pycocoevalcap's scorers take them; clear errors otherwise."""
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} reference lists")
    count = len(candidates)
    num_refs = np.fromiter(map(len, references), dtype=np.int64, count=count)
    if count and int(num_refs.min()) == 0:
        raise ValueError(f"candidate {int(np.argmin(num_refs))} has no reference captions")
    words = word_ids([*candidates, *(r for refs in references for r in refs)], single_space=single_space)
    ref_image = np.repeat(np.arange(count, dtype=np.int64), num_refs)
    ref_slot = np.arange(ref_image.size, dtype=np.int64) - np.repeat(np.cumsum(num_refs) - num_refs, num_refs)
    image = np.concatenate([np.arange(count, dtype=np.int64), ref_image])
    slot = np.concatenate([np.zeros(count, dtype=np.int64), ref_slot + 1])
    return CaptionWords(words, num_refs, image, slot)


def word_ids(sentences: Sequence[str], *, single_space: bool = False) -> WordIds:
    """Word ids of `sentences` split by `str.split(" ")` (`single_space`) or `str.split()`."""
    if len(sentences) == 0:
        return WordIds(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), 0)
    try:
        text = "\n".join(sentences)
    except TypeError:
        bad = next(s for s in sentences if not isinstance(s, str))
        raise TypeError(f"captions must be strings, got {type(bad).__name__}: {bad!r}") from None
    if single_space or text.isascii() or _UNICODE_SPACE.search(text) is None:
        # 8 zero bytes of padding: every word's chunk can be read as a whole uint64 (see _bytes_ids)
        padded = np.frombuffer((text + "\0" * 8).encode("utf-8", "surrogatepass"), dtype=np.uint8)
        size = padded.size - 8
        delim = np.flatnonzero(padded[:size] <= 32)  # spaces, the newlines between sentences, other controls
        delim_byte = padded[delim]
        if int(np.count_nonzero(delim_byte != 32)) == len(sentences) - 1:  # no control byte inside a caption
            return _byte_word_ids(padded, delim, delim_byte, single_space)
    return _python_word_ids(sentences, single_space)


def _python_word_ids(sentences: Sequence[str], single_space: bool) -> WordIds:
    """The reference path: `str.split` and a dict (any text)."""
    split = [s.split(" ") if single_space else s.split() for s in sentences]
    lengths = np.fromiter(map(len, split), dtype=np.int64, count=len(split))
    words = [w for ws in split for w in ws]
    vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}
    ids = np.fromiter(map(vocab.__getitem__, words), dtype=np.int64, count=len(words))
    return WordIds(ids, lengths, len(vocab))


def _byte_word_ids(padded: np.ndarray, delim: np.ndarray, delim_byte: np.ndarray, single_space: bool) -> WordIds:
    """Words between separator bytes `delim` (spaces, and newlines between sentences) of the encoded
    text `padded` (8 zero bytes at the end); ids from their bytes."""
    size = padded.size - 8
    # 8 bytes starting at every offset, as one little-endian uint64 each (an unaligned strided view).
    at = np.ndarray(shape=(size + 1,), dtype="<u8", buffer=padded, strides=(1,))
    starts = np.empty(delim.size + 1, dtype=np.int64)
    starts[0] = 0
    np.add(delim, 1, out=starts[1:])
    length = np.empty(delim.size + 1, dtype=np.int64)
    np.subtract(delim, starts[:-1], out=length[:-1])
    length[-1] = size - starts[-1]
    last_word = np.append(np.flatnonzero(delim_byte == 10), delim.size)  # index of each sentence's last word
    if single_space or np.count_nonzero(length) == length.size:  # no empty words, or they count (split(" "))
        ends = last_word + 1
    else:  # str.split(): drop the empty words between adjacent separators
        count_before = np.cumsum(length > 0)
        keep = np.flatnonzero(length)
        starts, length = starts[keep], length[keep]
        ends = count_before[last_word]
    lengths = np.diff(ends, prepend=0)
    ids = _bytes_ids(at, starts, length)
    return WordIds(ids, lengths, int(ids.max()) + 1 if ids.size else 0)


def _bytes_ids(at: np.ndarray, starts: np.ndarray, length: np.ndarray) -> np.ndarray:
    """Exact ids of byte strings (`at[i]`: 8 bytes from offset i) by chunks of `_CHUNK` bytes."""
    def chunk(offset: np.ndarray, remaining: np.ndarray) -> np.ndarray:
        key = at[offset]
        key &= _MASKS[np.minimum(remaining, _CHUNK)]
        return key.view(np.int64)

    _, ids = _densify(chunk(starts, length))
    next_id = int(ids.max()) + 1 if ids.size else 0
    done = _CHUNK
    longer = np.flatnonzero(length > done)
    while longer.size:  # words still longer than what their id covers: combine it with the next chunk
        _, piece = _densify(chunk(starts[longer] + done, length[longer] - done))
        keys, combined = _densify(ids[longer] * (int(piece.max()) + 1) + piece)
        ids[longer] = next_id + combined
        next_id += keys.size
        done += _CHUNK
        longer = longer[length[longer] > done]
    return ids
