"""Noun phrases: their meaning (which objects they pick out), their truth, and their words.

Captions, foils and questions are built from `NP` values rather than from strings, so every
sentence can be checked against its scene before it is written: a caption must hold, a foil
must clearly fail, a question must have one answer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from vlp.data.scenes.layout import SceneObject
from vlp.data.scenes.vocab import (
    COLOUR_WORDS,
    GENERIC_WORDS,
    SHAPE_WORDS,
    SIZE_WORDS,
    number_word,
    pick,
    with_article,
)

Attribute = Literal["size", "colour", "shape"]
Pattern = tuple[Attribute, ...]


@dataclass(frozen=True)
class NP:
    """The meaning of a noun phrase.

    `count` None means "a"/"the" (at least one); 1 means exactly one, still said "a" (used in
    complete inventories); k >= 2 means exactly k ("two red circles").
    """

    shape: str | None = None
    colour: str | None = None
    size: str | None = None
    count: int | None = None

    def matches(self, obj: SceneObject) -> bool:
        return (
            (self.shape is None or obj.shape == self.shape)
            and (self.colour is None or obj.colour == self.colour)
            and (self.size is None or obj.size == self.size)
        )

    def select(self, objects: Iterable[SceneObject]) -> list[SceneObject]:
        return [o for o in objects if self.matches(o)]

    @property
    def plural(self) -> bool:
        return self.count is not None and self.count >= 2

    def holds(self, objects: Sequence[SceneObject]) -> bool:
        found = len(self.select(objects))
        return found >= 1 if self.count is None else found == self.count

    def clearly_false(self, objects: Sequence[SceneObject]) -> bool:
        """False beyond doubt: 'a X' with no X at all, or 'two X' with a different number of X.

        'a X' said of two X is not counted as false: a reader would not call it wrong.
        """
        found = len(self.select(objects))
        return found == 0 if self.count in (None, 1) else found != self.count

    def replace(self, **changes: object) -> NP:
        return dataclasses.replace(self, **changes)


def render_np(phrase: NP, choice: int, determiner: Literal["a", "the", "none"] = "a") -> str:
    """Words for `phrase`; `choice` fixes the synonyms, so a foil of a caption keeps its words."""
    words = []
    if phrase.size is not None:
        words.append(pick(SIZE_WORDS[phrase.size], choice))
    if phrase.colour is not None:
        words.append(pick(COLOUR_WORDS[phrase.colour], choice // 5))
    nouns = SHAPE_WORDS[phrase.shape] if phrase.shape is not None else GENERIC_WORDS
    singular, plural = nouns[(choice // 11) % len(nouns)]
    words.append(plural if phrase.plural else singular)
    body = " ".join(words)
    if phrase.plural:
        body = f"{number_word(phrase.count or 0)} {body}" if determiner != "none" else body
        return f"the {body}" if determiner == "the" else body
    if determiner == "a":
        return with_article(body)
    return f"the {body}" if determiner == "the" else body


# Ways to single out one object, most discriminative (for retrieval) first.
NAMING_PATTERNS: tuple[Pattern, ...] = (
    ("colour", "shape"),
    ("size", "colour", "shape"),
    ("shape",),
    ("size", "shape"),
    ("colour",),
    ("size", "colour"),
)


def describe(obj: SceneObject, pattern: Pattern, count: int | None = None) -> NP:
    return NP(
        shape=obj.shape if "shape" in pattern else None,
        colour=obj.colour if "colour" in pattern else None,
        size=obj.size if "size" in pattern else None,
        count=count,
    )


def unique_descriptions(obj: SceneObject, objects: Sequence[SceneObject], patterns: Sequence[Pattern]) -> list[NP]:
    """The descriptions, among `patterns`, that fit `obj` and no other object of the scene."""
    out = []
    for pattern in patterns:
        phrase = describe(obj, pattern)
        if len(phrase.select(objects)) == 1:
            out.append(phrase)
    return out


def choose_description(
    rng: np.random.Generator,
    obj: SceneObject,
    objects: Sequence[SceneObject],
    patterns: Sequence[Pattern] = NAMING_PATTERNS,
) -> NP | None:
    """A unique description of `obj`; the first pattern that works is preferred 2:1 over each later one."""
    options = unique_descriptions(obj, objects, patterns)
    if not options:
        return None
    weights = np.asarray([2.0] + [1.0] * (len(options) - 1))
    return options[int(rng.choice(len(options), p=weights / weights.sum()))]
