"""VQA accuracy as the official VQAv2 evaluation computes it, and its answer normalisation.

    acc(a) = mean over the n leave-one-out subsets of the n human answers of min(#matches / 3, 1)

With n = 10 this is 0.3, 0.6, 0.9, 1.0 for 1, 2, 3, >= 4 matching humans: the same table as the
"soft score" BUTD/UNITER train against (``soft_score``), so training targets and the metric agree.

Normalisation follows the official script (Agrawal et al., ``vqaEval.py``) rule for rule, because
its quirks change numbers: punctuation is deleted when it touches a space or when the text
contains a digit-comma-digit ("3,000" -> "3000"), and replaced by a space otherwise ("red,blue" ->
"red blue"); a period is removed unless a digit follows ("2.5" stays); then the text is lower-cased,
number words become digits ("two" -> "2", "none" -> "0"), articles are dropped and missing
apostrophes of contractions restored ("dont" -> "don't").

One more quirk: the official script normalises the *prediction* fully but the human answers only
by punctuation (and only when the humans disagree), because VQAv2's released answers are already
normalised. ``references="official"`` (the default) reproduces that; ``references="full"``
normalises the human answers like the prediction, which is what data with raw answers ("two",
"The dog") needs -- the built-in scenes dataset has such synonyms.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

__all__ = [
    "VQAAccuracy",
    "VQAReference",
    "answer_accuracy",
    "normalize_answer",
    "process_digit_article",
    "process_punctuation",
    "soft_score",
    "vqa_accuracy",
]

# Punctuation the official script handles (apostrophe, colon and period are not in it; the
# period has its own rule below).
_PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
_DIGIT_COMMA_DIGIT = re.compile(r"(\d)(,)(\d)")
# The official pattern is "(?!<=\d)(\.)(?!\d)": its first group is a (typo'd) negative lookahead
# that never fires, so in effect a period is removed unless a digit follows it. Kept as written.
_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")
_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
_ARTICLES = frozenset({"a", "an", "the"})


def _contractions() -> dict[str, str]:
    """Word -> contraction with its apostrophes restored, as in the official table.

    Listed by their restored forms, from which the keys (the forms with an apostrophe missing) are
    derived; the keys equal those of the official table that can match a lower-cased word (its
    capitalised keys such as "Im" never can, and its no-op entries are left out). Two official oddities are kept on purpose because they change
    results: "somebody'd" maps to "somebodyd", and "twas" gains a leading apostrophe.
    """
    restored = (
        "ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't "
        "haven't he'd he'd've he's how'd how'll how's isn't it'd it'd've it'll ma'am mightn't "
        "mightn't've might've mustn't must've needn't not've o'clock oughtn't shan't she'd've "
        "should've shouldn't shouldn't've somebody'd've somebody'll somebody's someone'd someone'd've "
        "someone'll someone's something'd something'd've something'll that's there'd there'd've "
        "there're there's they'd they'd've they'll they're they've wasn't we'd've we've weren't "
        "what'll what're what's what've when's where'd where's where've who'd who'd've who'll "
        "who's who've why'll why're why's won't would've wouldn't wouldn't've y'all you'd you'd've "
        "you'll you're you've"
    ).split()
    table: dict[str, str] = {}
    for word in restored:
        parts = word.split("'")
        if len(parts) == 2:  # "dont" -> "don't"
            table["".join(parts)] = word
        else:  # two apostrophes: the official keys miss one of them, never both
            table[parts[0] + parts[1] + "'" + parts[2]] = word  # "couldnt've"
            table[parts[0] + "'" + parts[1] + parts[2]] = word  # "couldn'tve"
    table.update(
        {
            "somebody'd": "somebodyd",
            "twas": "'twas",
            "yall'll": "y'all'll", "y'allll": "y'all'll",
            "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
            "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at",
        }
    )
    return table


CONTRACTIONS: dict[str, str] = _contractions()


def process_punctuation(text: str) -> str:
    """The official punctuation rule (see the module docstring)."""
    out = text
    strip_all = _DIGIT_COMMA_DIGIT.search(text) is not None
    for p in _PUNCTUATION:
        if strip_all or (p + " ") in text or (" " + p) in text:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    # The official call passes re.UNICODE as the *count* argument (32): at most 32 periods go.
    return _PERIOD.sub("", out, count=int(re.UNICODE))


def process_digit_article(text: str) -> str:
    """Lower-case; number words -> digits; drop articles; restore contractions."""
    words = [_NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    return " ".join(CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES)


def normalize_answer(text: str) -> str:
    """An answer as the official evaluation compares predictions: "Two." -> "2", "the dog" -> "dog"."""
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return process_digit_article(process_punctuation(text))


def soft_score(matches: int, num_answers: int = 10) -> float:
    """Mean over the ``num_answers`` leave-one-out subsets of min(#matches in the subset / 3, 1).

    A subset that leaves out a matching human holds ``matches - 1`` matches, the others ``matches``;
    so the mean has a closed form (no loop over subsets). ``num_answers = 10``: 0, .3, .6, .9, 1.
    """
    if num_answers < 1:
        raise ValueError(f"num_answers must be >= 1, got {num_answers}")
    if not 0 <= matches <= num_answers:
        raise ValueError(f"matches must be in [0, {num_answers}], got {matches}")
    left_out_match = matches * min((matches - 1) / 3.0, 1.0) if matches else 0.0
    left_out_other = (num_answers - matches) * min(matches / 3.0, 1.0)
    return (left_out_match + left_out_other) / num_answers


def _reference_answers(answers: Sequence[str], references: Literal["official", "full"]) -> list[str]:
    if references == "full":
        return [normalize_answer(a) for a in answers]
    if references != "official":
        raise ValueError(f"references must be 'official' or 'full', got {references!r}")
    if len(set(answers)) > 1:  # the official script only touches answers that disagree
        return [process_punctuation(a) for a in answers]
    return list(answers)


def answer_accuracy(prediction: str, answers: Sequence[str], references: Literal["official", "full"] = "official") -> float:
    """The VQA accuracy of one predicted answer against the human ``answers`` (in [0, 1])."""
    if not answers:
        raise ValueError("a question needs at least one human answer to be scored")
    refs = _reference_answers(answers, references)
    return soft_score(refs.count(normalize_answer(prediction)), len(refs))


class VQAReference(Protocol):
    """What the metric reads of a question (``vlp.data.vqa.VQARecord`` has it)."""

    question_id: int
    answers: tuple[str, ...]
    answer_type: str
    question_type: str


@dataclass
class VQAAccuracy:
    """Accuracies in [0, 1] (the official script prints 100x, rounded to 2 decimals)."""

    overall: float
    per_answer_type: dict[str, float]
    per_question_type: dict[str, float]
    per_question: dict[int, float] = field(repr=False)
    count: int

    def as_percent(self) -> dict[str, object]:
        """The official report's shape: percentages rounded to two decimals."""
        pct = lambda x: round(100.0 * x, 2)  # noqa: E731
        return {
            "overall": pct(self.overall),
            "perAnswerType": {k: pct(v) for k, v in self.per_answer_type.items()},
            "perQuestionType": {k: pct(v) for k, v in self.per_question_type.items()},
        }


def vqa_accuracy(
    predictions: Mapping[int, str],
    references: Sequence[VQAReference],
    *,
    reference_normalization: Literal["official", "full"] = "official",
) -> VQAAccuracy:
    """Overall, per-answer-type and per-question-type VQA accuracy of ``predictions`` (question id -> answer).

    Every reference question must have a prediction (as in the official script); predictions for
    questions outside ``references`` are an error too, since they usually mean mismatched splits.
    """
    if not references:
        raise ValueError("no reference questions to score")
    wanted = {r.question_id for r in references}
    missing = [r.question_id for r in references if r.question_id not in predictions]
    if missing:
        raise ValueError(f"{len(missing)} of {len(references)} questions have no prediction (e.g. question_id {missing[0]})")
    extra = [q for q in predictions if q not in wanted]
    if extra:
        raise ValueError(f"{len(extra)} predictions are for questions not in the references (e.g. question_id {extra[0]})")
    per_question: dict[int, float] = {}
    by_answer: dict[str, list[float]] = defaultdict(list)
    by_question: dict[str, list[float]] = defaultdict(list)
    for ref in references:
        acc = answer_accuracy(predictions[ref.question_id], ref.answers, reference_normalization)
        per_question[ref.question_id] = acc
        by_answer[ref.answer_type].append(acc)
        by_question[ref.question_type].append(acc)
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    return VQAAccuracy(
        overall=mean(list(per_question.values())),
        per_answer_type={k: mean(v) for k, v in sorted(by_answer.items())},
        per_question_type={k: mean(v) for k, v in sorted(by_question.items())},
        per_question=per_question,
        count=len(per_question),
    )

