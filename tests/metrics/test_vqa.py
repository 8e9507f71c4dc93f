"""VQA accuracy: hand-computed values on real VQAv2 answers, synthetic agreement counts, the
official normalisation rules, and the closed form against a naive leave-one-out loop."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from pathlib import Path

import pytest

from vlp.data.vqa import read_vqa
from vlp.metrics.vqa import answer_accuracy, normalize_answer, process_punctuation, soft_score, vqa_accuracy


def naive_accuracy(prediction: str, answers: list[str]) -> float:
    """The official loop, literally: for each human, drop them and count the others that match."""
    accs = []
    for left_out in range(len(answers)):
        others = [a for i, a in enumerate(answers) if i != left_out]
        accs.append(min(1.0, sum(a == prediction for a in others) / 3))
    return sum(accs) / len(accs)


@pytest.mark.parametrize(
    ("matches", "expected"),
    [
        (0, 0.0),
        # 1 of 10: the subset without that human has 0 matches, the 9 others 1 -> 9 * (1/3) / 10
        (1, 0.3),
        # 2 of 10: 2 subsets hold 1 match (1/3), 8 hold 2 (2/3) -> (2/3 + 16/3) / 10 = 6/10
        (2, 0.6),
        # 3 of 10: 3 subsets hold 2 matches (2/3), 7 hold 3 (1) -> (2 + 7) / 10
        (3, 0.9),
        # 4 of 10: every subset holds >= 3 matches -> 1
        (4, 1.0),
        (10, 1.0),
    ],
)
def test_soft_score_by_hand(matches: int, expected: float) -> None:
    assert soft_score(matches) == pytest.approx(expected)
    answers = ["cat"] * matches + ["dog"] * (10 - matches)
    assert answer_accuracy("cat", answers) == pytest.approx(expected)


def test_closed_form_matches_naive_loop() -> None:
    rng = random.Random(0)
    for n, m in itertools.product(range(1, 12), range(0, 12)):
        if m <= n:
            answers = ["x"] * m + ["y"] * (n - m)
            rng.shuffle(answers)
            assert soft_score(m, n) == pytest.approx(naive_accuracy("x", answers)), (n, m)
    with pytest.raises(ValueError, match="matches"):
        soft_score(11, 10)


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("Two", "2"),  # number word -> digit, after lower-casing
        ("none", "0"),
        ("the dog.", "dog"),  # article dropped, final period removed
        ("A lot", "lot"),
        ("dont", "don't"),  # contraction restored
        ("couldnt've", "couldn't've"),
        ("somebody'd", "somebodyd"),  # an official-table oddity, kept for identical numbers
        ("Im", "im"),  # the official table's capitalised keys never match lower-cased words
        ("3,000", "3000"),  # digit-comma-digit: every punctuation mark is deleted
        ("red,blue", "red blue"),  # otherwise punctuation becomes a space
        ("t-shirt", "t shirt"),
        ("left - right", "left right"),  # punctuation touching a space is deleted
        ("2.5", "2.5"),  # a period followed by a digit stays
        ("yes!", "yes"),
        ("  Yes\n", "yes"),
        ("it's 10:30", "it's 10:30"),  # apostrophe and colon are not punctuation to the script
    ],
)
def test_normalisation(raw: str, normalised: str) -> None:
    assert normalize_answer(raw) == normalised


def test_punctuation_rule_is_per_mark() -> None:
    # "?" touches a space, "-" does not: the first is deleted, the second becomes a space.
    assert process_punctuation("why ? well-known") == "why  well known"


@dataclass
class Ref:
    question_id: int
    answers: tuple[str, ...]
    answer_type: str
    question_type: str


def test_real_vqav2_answers_by_hand(shared_data: Path) -> None:
    sample = shared_data / "vqa-sample"
    records = read_vqa(sample / "questions.json", sample / "annotations.json", sample / "images")
    by_id = {r.question_id: r for r in records}
    # Q 458752000 "looking through?": net x6, netting, mesh, pitcher, orange (10 humans).
    net = by_id[458752000]
    assert sorted(net.answers).count("net") == 6
    assert answer_accuracy("net", net.answers) == 1.0  # 6 match: every subset keeps >= 5
    assert answer_accuracy("Net.", net.answers) == 1.0  # prediction normalised to "net"
    assert answer_accuracy("mesh", net.answers) == pytest.approx(0.3)  # 1 match: 9 subsets x 1/3 / 10
    assert answer_accuracy("fence", net.answers) == 0.0
    # Q 458752001 "position?": pitcher x9, catcher x1.
    position = by_id[458752001]
    assert answer_accuracy("catcher", position.answers) == pytest.approx(0.3)
    assert answer_accuracy("The pitcher", position.answers) == 1.0
    # Q 458752002 "shirt color?": orange x10 (unanimous: the references are left untouched).
    assert answer_accuracy("orange", by_id[458752002].answers) == 1.0
    result = vqa_accuracy({458752000: "mesh", 458752001: "catcher", 458752002: "Orange"}, records)
    # (0.3 + 0.3 + 1.0) / 3 = 0.5333; the sample keeps no answer/question types -> one "" group.
    assert result.overall == pytest.approx(1.6 / 3)
    assert result.per_answer_type == {"": pytest.approx(1.6 / 3)}
    assert result.as_percent()["overall"] == 53.33
    assert result.per_question[458752002] == 1.0


def test_per_type_and_reference_modes() -> None:
    refs = [
        Ref(1, ("2",) * 8 + ("two",) * 2, "number", "how many"),
        Ref(2, ("yes",) * 7 + ("no",) * 3, "yes/no", "is there a"),
        Ref(3, ("red",) * 10, "other", "what color is the"),
    ]
    preds = {1: "two", 2: "no", 3: "blue"}
    official = vqa_accuracy(preds, refs)
    # Q1: the prediction "two" -> "2"; official leaves the human "two"s unnormalised: 8 match -> 1.0.
    # Q2: "no" matches 3 of 10 -> 0.9. Q3: 0.
    assert official.per_question == {1: 1.0, 2: pytest.approx(0.9), 3: 0.0}
    assert official.per_answer_type == {"number": 1.0, "other": 0.0, "yes/no": pytest.approx(0.9)}
    assert official.overall == pytest.approx(1.9 / 3)
    # With only 2 "2"s and 8 "two"s the modes differ: official sees 2 matches (0.6), full sees 10 (1.0).
    swapped = [Ref(1, ("two",) * 8 + ("2",) * 2, "number", "how many")]
    assert vqa_accuracy({1: "2"}, swapped).overall == pytest.approx(0.6)
    assert vqa_accuracy({1: "2"}, swapped, reference_normalization="full").overall == 1.0


def test_errors_name_the_problem() -> None:
    refs = [Ref(1, ("a",) * 10, "other", "what")]
    with pytest.raises(ValueError, match="no prediction"):
        vqa_accuracy({}, refs)
    with pytest.raises(ValueError, match="not in the references"):
        vqa_accuracy({1: "a", 2: "b"}, refs)
    with pytest.raises(ValueError, match="at least one human answer"):
        answer_accuracy("a", [])
    with pytest.raises(ValueError, match="'official' or 'full'"):
        answer_accuracy("a", ["a", "b"], "exact")  # type: ignore[arg-type]
