"""Caption metrics: optimised paths against plain references, edge cases, errors and the one-call API.

Parity with pycocoevalcap itself is in tests/parity/test_pycocoevalcap.py.
"""

from __future__ import annotations

import math
import os
import random

import numpy as np
import pytest

from vlp.metrics.caption import CiderD, bleu, cider_d, evaluate_captions, rouge_l
from vlp.metrics.caption_java import unavailable_reason
from vlp.metrics.caption_ngrams import _densify, _densify_grouped
from vlp.metrics.caption_rouge import _lcs_python_bits, lcs_length, rouge_l_scores
from vlp.metrics.caption_tokenize import ptb_tokenize, tokenize_captions
from vlp.metrics.caption_words import _byte_word_ids, _python_word_ids, word_ids

WORDS = "a the dog cat man on in red blue sits runs grass table with of".split()


def _sentence(rng: random.Random, low: int = 0, high: int = 12) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))


def _naive_rouge(candidate: str, refs: list[str], beta: float = 1.2) -> float:
    c = candidate.split(" ")
    lcs = [lcs_length(r.split(" "), c) for r in refs]
    p = max(x / len(c) for x in lcs)
    r = max(x / len(ref.split(" ")) for x, ref in zip(lcs, refs))
    return (1 + beta**2) * p * r / (r + beta**2 * p) if p and r else 0.0


def test_bit_parallel_rouge_equals_plain_dp_including_long_references() -> None:
    rng = random.Random(0)
    cands = [_sentence(rng) for _ in range(60)]
    refs = [[_sentence(rng, 1, 20) for _ in range(rng.randint(1, 4))] for _ in range(60)]
    refs[0].append(" ".join(rng.choice(WORDS) for _ in range(90)))  # > 64 words: the DP fallback
    refs[1][0] = " ".join(["dog"] * 64)  # exactly 64 bits
    cands[1] = "dog " * 70 + "dog"  # > 64 words: the Python-int bit vector
    cands[2] = " ".join(rng.choice(WORDS) for _ in range(64))  # exactly 64 bits
    ours = rouge_l_scores(cands, refs)
    np.testing.assert_allclose(ours, [_naive_rouge(c, r) for c, r in zip(cands, refs)], atol=1e-12)


def _same_partition(ids: np.ndarray, words: list[str]) -> bool:
    """ids equal exactly where the words are equal."""
    return len(set(zip(ids.tolist(), words))) == len(set(ids.tolist())) == len(set(words))


@pytest.mark.parametrize("single_space", [False, True], ids=["split()", "split(' ')"])
def test_word_ids_byte_path_equals_str_split(single_space: bool) -> None:
    rng = random.Random(0)
    # Words of 1..23 bytes sharing 5- and 10-byte prefixes (the chunks the byte path reads), multi-byte UTF-8.
    stems = ["abcde", "abcdefghij", "caf\u00e9", "\u4e2d\u6587\u5b57", "x"]
    vocab = [stem + tail for stem in stems for tail in ["", "f", "fg", "klmno", "klmnopqrstuvw", "\u00e9"]]
    sentences = [" ".join(rng.choice(vocab) for _ in range(rng.randint(0, 12))) for _ in range(200)]
    sentences += ["", " ", "a  b", " lead", "trail "]
    expected = [s.split(" ") if single_space else s.split() for s in sentences]
    padded = np.frombuffer(("\n".join(sentences) + "\0" * 8).encode(), dtype=np.uint8)
    delim = np.flatnonzero(padded[:-8] <= 32)
    for out in (word_ids(sentences, single_space=single_space), _byte_word_ids(padded, delim, padded[delim], single_space),
                _python_word_ids(sentences, single_space)):
        np.testing.assert_array_equal(out.lengths, [len(e) for e in expected])
        flat = [w for e in expected for w in e]
        assert out.ids.size == len(flat) and int(out.ids.max()) < out.vocab_size
        assert _same_partition(out.ids, flat)


def test_word_ids_splits_on_every_whitespace_character_like_str() -> None:
    spaces = [chr(c) for c in range(0x110000) if chr(c).isspace()]
    assert len(spaces) == 29  # what str.split() splits on; the byte path must never see one it does not handle
    for space in spaces:
        sentences = [f"a{space}b c", "a b"]
        for single_space in (False, True):
            out = word_ids(sentences, single_space=single_space)
            expected = [s.split(" ") if single_space else s.split() for s in sentences]
            np.testing.assert_array_equal(out.lengths, [len(e) for e in expected], err_msg=repr(space))
            assert _same_partition(out.ids, [w for e in expected for w in e]), repr(space)
    with pytest.raises(TypeError, match="captions must be strings"):
        word_ids(["a", None])  # type: ignore[list-item]


def test_python_int_lcs_equals_plain_dp() -> None:
    rng = random.Random(3)
    for _ in range(200):
        a = [rng.randrange(6) for _ in range(rng.randint(0, 90))]
        b = [rng.randrange(6) for _ in range(rng.randint(0, 30))]
        assert _lcs_python_bits(a, b) == lcs_length([str(x) for x in a], [str(x) for x in b])


def test_lcs_length_reference() -> None:
    assert lcs_length("a b c d".split(), "b d".split()) == 2
    assert lcs_length("a b".split(), "c".split()) == 0
    assert lcs_length([], ["a"]) == 0


def test_densify_grouped_one_sort_equals_two_sorts() -> None:
    rng = np.random.default_rng(0)
    pairs, group = rng.integers(0, 50, 500), rng.integers(0, 7, 500)
    table, dense, row_keys, rows = _densify_grouped(pairs, group, 7)
    ref_table, ref_dense = _densify(pairs)
    ref_row_keys, ref_rows = _densify(ref_dense * 7 + group)
    for a, b in [(table, ref_table), (dense, ref_dense), (row_keys, ref_row_keys), (rows, ref_rows)]:
        np.testing.assert_array_equal(a, b)
    huge = pairs + (1 << 61)  # the combined key would overflow: two-sort fallback, same ids
    _, dense_h, row_keys_h, rows_h = _densify_grouped(huge, group, 7)
    np.testing.assert_array_equal(dense_h, ref_dense)
    np.testing.assert_array_equal(rows_h, ref_rows)
    np.testing.assert_array_equal(row_keys_h, ref_row_keys)


def test_perfect_and_empty_candidates() -> None:
    refs = {1: ["a dog on the grass", "a dog on the grass"], 2: ["two red cars parked here"] * 2}
    perfect = {1: "a dog on the grass", 2: "two red cars parked here"}
    b, _ = bleu(perfect, refs)
    assert all(abs(x - 1.0) < 1e-6 for x in b)
    assert abs(rouge_l(perfect, refs)[0] - 1.0) < 1e-12
    # no n-gram is shared between the images (all idf = log 2) and both have 4-grams: cosine 1 at every order
    assert cider_d(perfect, refs)[0] == pytest.approx(10.0)
    empty = {1: "", 2: ""}
    assert bleu(empty, refs)[0][0] < 1e-6
    assert rouge_l(empty, refs)[0] == 0.0
    assert cider_d(empty, refs)[0] == 0.0


def test_ngrams_in_every_image_carry_no_cider_weight() -> None:
    refs = {i: ["a man on a horse"] * 2 for i in range(3)}  # document frequency = number of images
    assert cider_d({i: "a man on a horse" for i in range(3)}, refs)[0] == 0.0


def test_cider_object_scores_many_batches_like_one_corpus_call() -> None:
    rng = random.Random(1)
    refs = {i: [_sentence(rng, 3) for _ in range(rng.randint(1, 5))] for i in range(20)}
    preds = {i: _sentence(rng, 1) for i in refs}
    _, per_image = cider_d(preds, refs)
    scorer = CiderD(refs)
    ids = list(refs)
    order = ids[::-1] + ids[:5]  # repeated images (several samples per image, as in SCST)
    batch = scorer.score(order, [preds[i] for i in order])
    np.testing.assert_allclose(batch, [per_image[i] for i in order], atol=1e-12)
    np.testing.assert_allclose(scorer.score(ids[:3], [preds[i] for i in ids[:3]]), per_image[:3], atol=1e-12)
    with pytest.raises(ValueError, match="no references"):
        scorer.score(["missing"], ["a dog"])
    with pytest.raises(ValueError, match="2 image ids but 1 candidates"):
        scorer.score(ids[:2], ["a dog"])


def test_bad_input_errors_name_the_problem() -> None:
    refs = {1: ["a dog"], 2: ["a cat"]}
    with pytest.raises(ValueError, match=r"have no references, e\.g\. \[3\]"):
        evaluate_captions({1: "a dog", 3: "a cat"}, refs)
    with pytest.raises(TypeError, match="prediction for image 1 must be one string"):
        evaluate_captions({1: ["a dog"]}, refs)
    with pytest.raises(ValueError, match="image 1 has an empty reference list"):
        evaluate_captions({1: "a dog"}, {1: []})
    with pytest.raises(TypeError, match="references for image 1 must be a list of strings"):
        evaluate_captions({1: "a dog"}, {1: "a dog"})
    with pytest.raises(TypeError, match="captions must be strings"):
        bleu({1: "a dog"}, {1: ["a dog", 5]})
    with pytest.raises(ValueError, match="no predictions"):
        evaluate_captions({}, refs)
    with pytest.raises(ValueError, match="at least one image"):
        CiderD({})
    with pytest.raises(ValueError, match="unknown caption metric"):
        evaluate_captions({1: "a dog"}, refs, metrics=("bleu", "cidr"))


def test_evaluate_captions_tokenises_like_pre_tokenised_input() -> None:
    raw_refs = {1: ["A dog's toy, on the grass.", "The dog plays."], 2: ["Two cats (sleeping).", "Cats don't move!"]}
    raw_preds = {1: "A dog plays on the grass.", 2: "Two cats aren't moving."}
    ours = evaluate_captions(raw_preds, raw_refs)
    assert set(ours) == {"bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "cider"}
    pre = evaluate_captions({k: ptb_tokenize(v) for k, v in raw_preds.items()}, tokenize_captions(raw_refs), tokenize=False)
    assert ours == pre
    assert tokenize_captions(raw_refs)[2] == ["two cats -lrb- sleeping -rrb-", "cats do n't move"]
    # extra reference images are ignored, as COCOEvalCap evaluates the predicted ids
    assert evaluate_captions(raw_preds, {**raw_refs, 3: ["unused"]}) == ours


def test_ptb_tokenize_examples() -> None:
    assert ptb_tokenize("A Dog's bone, isn't it?") == "a dog 's bone is n't it"
    assert ptb_tokenize("The U.S. flag -- 3.5 m\u2014tall.") == "the u.s. flag 3.5 m tall"
    assert ptb_tokenize('He said "cannot" (twice)...') == "he said can not -lrb- twice -rrb-"
    assert ptb_tokenize("") == ""


def test_unavailable_java_metrics_are_reported_not_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    import vlp.metrics.caption_java as java

    monkeypatch.setattr(java.shutil, "which", lambda _: None)
    with pytest.warns(UserWarning, match=r"meteor: unavailable \(needs java \+ pycocoevalcap\)"):
        out = evaluate_captions({1: "a dog"}, {1: ["a dog"]}, metrics=("bleu", "meteor"))
    assert math.isnan(out["meteor"]) and out["bleu_1"] > 0.99


def test_spice_without_corenlp_jars_is_unavailable_without_download() -> None:
    reason = unavailable_reason("spice")
    if reason is None:
        pytest.skip("SPICE's CoreNLP jars are installed here")
    with pytest.warns(UserWarning, match="spice: unavailable"):
        out = evaluate_captions({1: "a dog"}, {1: ["a dog"]}, metrics=("spice",))
    assert math.isnan(out["spice"])


@pytest.mark.skipif(os.environ.get("VLP_RUN_METEOR") != "1", reason="starts METEOR's JVM (~40 s); set VLP_RUN_METEOR=1")
def test_meteor_runs_through_pycocoevalcap() -> None:
    if unavailable_reason("meteor") is not None:
        pytest.skip(unavailable_reason("meteor"))
    out = evaluate_captions({1: "A dog runs on the grass."}, {1: ["A dog running on grass.", "The dog runs."]}, metrics=("meteor",))
    assert 0.0 < out["meteor"] < 1.0


def _full_scan(caption: str) -> str:
    """ptb_tokenize without its plain-caption shortcut: the regex scan for every caption."""
    from vlp.metrics.caption_tokenize import PUNCTUATIONS, ptb_tokens

    return " ".join(t for t in ptb_tokens(caption.replace("\n", " ")) if t not in PUNCTUATIONS)


def test_plain_caption_shortcut_equals_the_full_scan(shared_data) -> None:
    """The shortcut for letters/commas/final-period captions gives the full scan's tokens, on the real
    COCO captions and on generated ones built to hit its edges (abbreviations, assimilations, a lone
    letter before the period, commas without spaces, trailing spaces, upper case)."""
    import json

    from vlp.metrics.caption_tokenize import _plain_tokens

    real = [a["caption"] for a in json.loads((shared_data / "coco-sample" / "captions.json").read_text())["annotations"]]
    rng = random.Random(0)
    pieces = WORDS + ["St", "etc", "Mr", "gonna", "cannot", "Wanna", "b", "U", "first", "no", "fig", "A", "DOG"]
    generated = []
    for _ in range(3000):
        words = [rng.choice(pieces) for _ in range(rng.randint(0, 8))]
        text = "".join(w + rng.choice([" ", " ", ",", ", ", " , "]) for w in words).rstrip(" ,")
        generated.append(text + rng.choice(["", ".", ". ", " .", "..", ",", "  "]))
    shortcut = 0
    for caption in real + generated:
        assert ptb_tokenize(caption) == _full_scan(caption), caption
        shortcut += _plain_tokens(caption.lower()) is not None
    assert shortcut > len(real)  # the shortcut really ran on most captions, not just the fallback
