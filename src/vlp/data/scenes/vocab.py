"""The closed world of the scenes dataset: shapes, colours, sizes, relations and their words.

Every other scenes module draws its names from here, so layout, rendering, captions, VQA and
the annotations can never disagree. Canonical names (``"gray"``, ``"circle"``) are what the
annotations and VQA answers use; the synonyms only appear in captions and questions, and each
synonym is chosen to stay *true* of the drawing ("disk" for a filled circle, never "ring").
"""

from __future__ import annotations

from collections.abc import Sequence

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "star", "cross", "hexagon", "heart")

# (singular, plural) pairs per shape; the first pair is the canonical name.
SHAPE_WORDS: dict[str, tuple[tuple[str, str], ...]] = {
    "circle": (("circle", "circles"), ("disk", "disks")),
    "square": (("square", "squares"),),
    "triangle": (("triangle", "triangles"),),
    "diamond": (("diamond", "diamonds"), ("rhombus", "rhombuses")),
    "star": (("star", "stars"),),
    "cross": (("cross", "crosses"), ("plus sign", "plus signs")),
    "hexagon": (("hexagon", "hexagons"),),
    "heart": (("heart", "hearts"),),
}
# Nouns for an object whose shape a phrase leaves open ("two red objects").
GENERIC_WORDS: tuple[tuple[str, str], ...] = (("object", "objects"), ("shape", "shapes"))

# Saturated, mutually distinct colours; all are far darker or more saturated than the pale
# backgrounds (render.py), and each object also gets a darker outline for contrast.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (40, 155, 55),
    "blue": (35, 80, 215),
    "yellow": (240, 205, 20),
    "purple": (125, 45, 170),
    "orange": (245, 130, 20),
    "pink": (240, 120, 185),
    "brown": (120, 72, 32),
    "gray": (125, 125, 125),
    "cyan": (20, 190, 205),
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)
COLOUR_WORDS: dict[str, tuple[str, ...]] = {name: (name,) for name in COLOUR_NAMES} | {"gray": ("gray", "grey")}

SIZES: tuple[str, ...] = ("small", "large")
SIZE_WORDS: dict[str, tuple[str, ...]] = {"small": ("small", "little"), "large": ("large", "big")}
# Object extent as a fraction of the image side; large is ~1.8x small so the two never blur.
SIZE_FRACTION: dict[str, tuple[float, float]] = {"small": (0.16, 0.19), "large": (0.29, 0.33)}

RELATIONS: tuple[str, ...] = ("left", "right", "above", "below")
RELATION_WORDS: dict[str, tuple[str, ...]] = {
    "left": ("left of", "to the left of", "on the left of"),
    "right": ("right of", "to the right of", "on the right of"),
    "above": ("above", "over"),
    "below": ("below", "under", "beneath"),
}
OPPOSITE: dict[str, str] = {"left": "right", "right": "left", "above": "below", "below": "above"}

NUMBER_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six")
MAX_OBJECTS = 4

# Colour-shape combinations that never occur in train/val/test and occur in every test_novel
# image (compositional generalisation). 8 of 80 combos (10 %); each shape is held out with
# exactly one colour, so every colour and every shape still appears in training.
HELD_OUT_COMBOS: tuple[tuple[str, str], ...] = (
    ("red", "triangle"),
    ("green", "heart"),
    ("blue", "diamond"),
    ("yellow", "circle"),
    ("purple", "square"),
    ("orange", "cross"),
    ("pink", "hexagon"),
    ("brown", "star"),
)
ALL_COMBOS: tuple[tuple[str, str], ...] = tuple((c, s) for c in COLOUR_NAMES for s in SHAPES)
SEEN_COMBOS: tuple[tuple[str, str], ...] = tuple(c for c in ALL_COMBOS if c not in HELD_OUT_COMBOS)


def pick(options: Sequence[str], choice: int) -> str:
    """A deterministic word choice: the caller keeps `choice`, so a foil can reuse its caption's words."""
    return options[choice % len(options)]


def with_article(phrase: str) -> str:
    """'a red star' / 'an orange star' (every word of this vocabulary follows the spelling rule)."""
    return ("an " if phrase[:1] in "aeiou" else "a ") + phrase


def join_words(items: Sequence[str]) -> str:
    """'red', 'red and blue', 'red, blue and green'."""
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def number_word(n: int) -> str:
    return NUMBER_WORDS[n]
