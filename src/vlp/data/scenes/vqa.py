"""VQA: questions with exactly one correct answer, and ten noisy human-like answers each.

Question kinds: existence (yes/no, balanced by a coin flip per question), count, colour of a
uniquely described object, shape of a uniquely described object, and spatial relations (yes/no
or "what shape is left of the ...?"). Relation questions are only asked where the answer is
clear: the relation holds with the layout margin, or does not hold at all.

Answers follow VQAv2: ten annotators, mostly the canonical answer, some synonyms ("grey",
"two") and sometimes one or two wrong answers, so soft accuracy min(#agree / 3, 1) matters.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from vlp.data.scenes.language import NP, Pattern, choose_description, describe, render_np
from vlp.data.scenes.layout import Scene, clearly_fails, clearly_holds
from vlp.data.scenes.vocab import (
    ALL_COMBOS,
    COLOUR_NAMES,
    HELD_OUT_COMBOS,
    NUMBER_WORDS,
    RELATION_WORDS,
    RELATIONS,
    SHAPE_WORDS,
    SHAPES,
    pick,
)

QUESTIONS_PER_IMAGE = 4
ANSWERS_PER_QUESTION = 10
SYNONYM_P = 0.06  # per annotator: a synonym of the canonical answer ("grey", "two")
WRONG_P = 0.3  # per question: one or two annotators answer wrongly

NO_COLOUR: tuple[Pattern, ...] = (("shape",), ("size", "shape"), ("size",))
NO_SHAPE: tuple[Pattern, ...] = (("colour",), ("size", "colour"), ("size",))


@dataclass(frozen=True)
class Question:
    text: str
    answer: str  # canonical answer
    answer_type: str  # "yes/no" | "number" | "other"
    question_type: str  # the question's opening words, as VQAv2 groups them


T = TypeVar("T")


def _rand(rng: np.random.Generator, items: Sequence[T]) -> T:
    return items[int(rng.integers(len(items)))]


def _bare_plural(phrase: NP, choice: int) -> str:
    return render_np(phrase.replace(count=2), choice, "none")


def _exists(scene: Scene, rng: np.random.Generator, novel: bool) -> Question | None:
    objects = scene.objects
    choice = int(rng.integers(10_000))
    if rng.random() < 0.5:
        obj = _rand(rng, objects)
        patterns: list[Pattern] = [("colour", "shape"), ("colour", "shape"), ("size", "colour", "shape"), ("shape",)]
        pattern = _rand(rng, patterns)
        phrase, answer = describe(obj, pattern), "yes"
    else:
        colours, shapes = {o.colour for o in objects}, {o.shape for o in objects}
        allowed = [c for c in ALL_COMBOS if novel or c not in HELD_OUT_COMBOS]
        absent = [NP(shape=s, colour=c) for c, s in allowed if not NP(shape=s, colour=c).select(objects)]
        hard = [p for p in absent if p.colour in colours and p.shape in shapes]
        hard += [
            NP(shape=o.shape, colour=o.colour, size=size)
            for o in objects
            for size in ("small", "large")
            if not NP(shape=o.shape, colour=o.colour, size=size).select(objects)
        ]
        phrase, answer = _rand(rng, hard if hard and rng.random() < 0.7 else absent), "no"
    form = int(rng.integers(4))
    if form == 1:
        text = f"are there any {_bare_plural(phrase, choice)}?"
        return Question(text, answer, "yes/no", "are there any")
    opening = ("is there", "is there", "does the image contain", "can you see")[form]
    return Question(f"{opening} {render_np(phrase, choice)}?", answer, "yes/no", opening + (" a" if form == 0 else ""))


def _count(scene: Scene, rng: np.random.Generator, novel: bool) -> Question | None:
    objects = scene.objects
    obj = _rand(rng, objects)
    pattern: Pattern = _rand(rng, [(), ("shape",), ("colour",), ("colour", "shape")])
    phrase = describe(obj, pattern)
    if pattern and rng.random() < 0.15:  # sometimes ask about something absent: the answer is 0
        # Outside test_novel, never name a held-out combo, not even in a question.
        candidates = [
            NP(shape=s if "shape" in pattern else None, colour=c if "colour" in pattern else None)
            for c, s in ALL_COMBOS
            if novel or (c, s) not in HELD_OUT_COMBOS
        ]
        absent = [p for p in dict.fromkeys(candidates) if not p.select(objects)]
        phrase = _rand(rng, absent)
    choice = int(rng.integers(10_000))
    ending = _rand(rng, ["are there", "are in the image", "can you see"])
    text = f"how many {_bare_plural(phrase, choice)} {ending}?"
    return Question(text, str(len(phrase.select(objects))), "number", "how many")


def _colour(scene: Scene, rng: np.random.Generator, novel: bool) -> Question | None:
    obj = _rand(rng, scene.objects)
    phrase = choose_description(rng, obj, scene.objects, NO_COLOUR)
    if phrase is None:
        return None
    text = f"what color is {render_np(phrase, int(rng.integers(10_000)), 'the')}?"
    return Question(text, obj.colour, "other", "what color is the")


def _shape(scene: Scene, rng: np.random.Generator, novel: bool) -> Question | None:
    obj = _rand(rng, scene.objects)
    phrase = choose_description(rng, obj, scene.objects, NO_SHAPE)
    if phrase is None:
        return None
    text = f"what shape is {render_np(phrase, int(rng.integers(10_000)), 'the')}?"
    return Question(text, obj.shape, "other", "what shape is the")


def _relation_yes_no(scene: Scene, rng: np.random.Generator, novel: bool) -> Question | None:
    objects, size = scene.objects, scene.image_size
    want_yes = rng.random() < 0.5
    pairs = [(x, y) for x in objects for y in objects if x is not y]
    for k in rng.permutation(len(pairs)).tolist():
        x, y = pairs[k]
        if want_yes:
            rels = [r for r in RELATIONS if clearly_holds(r, x, y, size)]
        else:
            rels = [r for r in RELATIONS if clearly_fails(r, x, y)]
        a, b = choose_description(rng, x, objects), choose_description(rng, y, objects)
        if rels and a is not None and b is not None:
            rel = _rand(rng, rels)
            choice = int(rng.integers(10_000))
            words = pick(RELATION_WORDS[rel], choice // 3)
            text = f"is {render_np(a, choice, 'the')} {words} {render_np(b, choice + 17, 'the')}?"
            return Question(text, "yes" if want_yes else "no", "yes/no", "is the")
    return None


def _relation_open(scene: Scene, rng: np.random.Generator, novel: bool) -> Question | None:
    objects, size = scene.objects, scene.image_size
    for y in rng.permutation(len(objects)).tolist():
        anchor = objects[y]
        for rel in [RELATIONS[i] for i in rng.permutation(len(RELATIONS)).tolist()]:
            others = [o for o in objects if o is not anchor]
            hits = [o for o in others if clearly_holds(rel, o, anchor, size)]
            if len(hits) != 1 or not all(clearly_fails(rel, o, anchor) for o in others if o is not hits[0]):
                continue
            b = choose_description(rng, anchor, objects)
            if b is None:
                continue
            choice = int(rng.integers(10_000))
            where = f"{pick(RELATION_WORDS[rel], choice // 3)} {render_np(b, choice, 'the')}"
            if rng.random() < 0.5:
                return Question(f"what shape is {where}?", hits[0].shape, "other", "what shape is")
            noun = pick(("object", "shape"), choice // 2)
            return Question(f"what color is the {noun} {where}?", hits[0].colour, "other", "what color is the")
    return None


QuestionMaker = Callable[[Scene, np.random.Generator, bool], "Question | None"]
# Preferred kinds per question slot; a slot falls back to its next kind when one cannot be asked.
SLOTS: tuple[tuple[QuestionMaker, ...], ...] = (
    (_exists,),
    (_count,),
    (_colour, _shape),
    (_relation_yes_no, _relation_open, _shape, _colour),
)


def make_questions(scene: Scene, rng: np.random.Generator, novel: bool) -> list[Question]:
    """QUESTIONS_PER_IMAGE questions with distinct texts, one per slot where the scene allows.

    Slots a scene cannot fill (no uniquely describable object, no clear relation) are filled
    with further count and existence questions.
    """
    questions: list[Question] = []

    def add(kinds: list[QuestionMaker], tries: int) -> None:
        for _ in range(tries):
            for kind in kinds:
                question = kind(scene, rng, novel)
                if question is not None and question.text not in {q.text for q in questions}:
                    questions.append(question)
                    return

    for slot in SLOTS:
        kinds = list(slot)
        if len(kinds) >= 2 and rng.random() < 0.5:  # vary which kind leads the slot
            kinds[0], kinds[1] = kinds[1], kinds[0]
        add(kinds, tries=3)
    for _ in range(QUESTIONS_PER_IMAGE):
        if len(questions) < QUESTIONS_PER_IMAGE:
            add([_count, _exists], tries=10)
    return questions


def _synonyms(answer: str) -> list[str]:
    if answer.isdigit():
        return [NUMBER_WORDS[int(answer)]]
    if answer == "gray":
        return ["grey"]
    if answer in SHAPE_WORDS:
        return [s for s, _ in SHAPE_WORDS[answer][1:] if " " not in s]
    return []


def _wrong(answer: str, answer_type: str, rng: np.random.Generator) -> str:
    if answer_type == "yes/no":
        return "no" if answer == "yes" else "yes"
    if answer_type == "number":
        n = int(answer)
        return str(n + 1 if n == 0 or rng.random() < 0.5 else n - 1)
    pool = COLOUR_NAMES if answer in COLOUR_NAMES else SHAPES
    return _rand(rng, [v for v in pool if v != answer])


def annotate(question: Question, rng: np.random.Generator) -> tuple[list[str], str]:
    """Ten annotator answers and the most common one (always the canonical answer: >= 6 of 10)."""
    answers = [question.answer] * ANSWERS_PER_QUESTION
    slots = rng.permutation(ANSWERS_PER_QUESTION).tolist()
    n_wrong = (1 if rng.random() < 0.7 else 2) if rng.random() < WRONG_P else 0
    for i in slots[:n_wrong]:
        answers[i] = _wrong(question.answer, question.answer_type, rng)
    synonyms = _synonyms(question.answer)
    if synonyms:
        n_syn = min(2, int(rng.binomial(ANSWERS_PER_QUESTION, SYNONYM_P)))
        for i in slots[n_wrong : n_wrong + n_syn]:
            answers[i] = _rand(rng, synonyms)
    return answers, Counter(answers).most_common(1)[0][0]
