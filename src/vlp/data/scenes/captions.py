"""Captions: five true sentences per image, each about a different aspect, from 24 templates.

A `Caption` is a meaning (noun phrases, relation, counts, colours) plus a template and a
synonym choice; its text is derived. Keeping the meaning lets us check every caption against
its scene (`holds`), and lets foils.py swap an attribute and re-render with the same words.

The aspects mimic different annotators: one counts, one states a relation, one lists colours,
one names a single object with its size, one inventories everything, one counts a group.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from vlp.data.scenes.language import NP, Pattern, choose_description, describe, render_np
from vlp.data.scenes.layout import Scene, clearly_fails, clearly_holds
from vlp.data.scenes.vocab import (
    COLOUR_WORDS,
    GENERIC_WORDS,
    RELATION_WORDS,
    RELATIONS,
    join_words,
    number_word,
    pick,
)

CAPTIONS_PER_IMAGE = 5
CHOICE_RANGE = 10_000  # synonym choices are drawn from range(CHOICE_RANGE)

# template key -> (aspect, format string). Placeholders are filled by Caption.text().
TEMPLATES: dict[str, tuple[str, str]] = {
    "count_there_are": ("count", "there are {n} {objects}"),
    "count_in_total": ("count", "{n} {objects} in total"),
    "count_one_of_them": ("count", "we see {n} {objects}, one of them {a}"),
    "count_including": ("count", "an image of {n} {objects} including {a}"),
    "count_single": ("count", "a single {a_bare}"),
    "count_only_one": ("count", "only one {object}: {a}"),
    "rel_plain": ("relation", "{a} {rel} {b}"),
    "rel_there": ("relation", "there {be} {a} {rel} {b}"),
    "rel_the": ("relation", "{the_a} {be} {rel} {the_b}"),
    "rel_we_see": ("relation", "we see {a} {rel} {b}"),
    "colours_in": ("colours", "{objects} in {colour_list}"),
    "colours_list": ("colours", "{colour_list} {objects}"),
    "colours_are": ("colours", "the colors are {colour_list}"),
    "colours_all": ("colours", "all {objects} are {colour_list}"),
    "colours_single": ("colours", "one {colour_list} {object}"),
    "object_there_is": ("object", "there is {a}"),
    "object_picture": ("object", "a picture with {a}"),
    "object_we_can_see": ("object", "we can see {a}"),
    "object_visible": ("object", "{a} is visible"),
    "inventory_list": ("inventory", "{np_list}"),
    "inventory_image": ("inventory", "an image with {np_list}"),
    "inventory_background": ("inventory", "{np_list} on a light background"),
    "group_there_are": ("group", "there are {a}"),
    "group_of_the": ("group", "{k} of the {objects} are {attr}"),
}


@dataclass(frozen=True)
class Caption:
    """The meaning of one caption, its template and its synonym choice."""

    template: str
    nps: tuple[NP, ...] = ()
    relation: str | None = None
    total: int | None = None  # number of objects in the image, when the caption claims it
    colours: tuple[str, ...] = ()  # the complete set of object colours, when the caption lists them
    choice: int = 0

    @property
    def aspect(self) -> str:
        return TEMPLATES[self.template][0]

    def replace(self, **changes: object) -> Caption:
        return dataclasses.replace(self, **changes)

    def text(self) -> str:
        c = self.choice
        fields: dict[str, str] = {
            "objects": pick([p for _, p in GENERIC_WORDS], c // 2),
            "object": pick([s for s, _ in GENERIC_WORDS], c // 2),
            "colour_list": join_words([pick(COLOUR_WORDS[col], c // 5) for col in self.colours]),
            "np_list": join_words([render_np(p, c + 17 * j) for j, p in enumerate(self.nps)]),
        }
        if self.total is not None:
            fields["n"] = number_word(self.total)
        if self.relation is not None:
            fields["rel"] = pick(RELATION_WORDS[self.relation], c // 3)
        for j, key in enumerate(("a", "b")[: len(self.nps)]):
            phrase = self.nps[j]
            fields[key] = render_np(phrase, c + 17 * j)
            fields[f"the_{key}"] = render_np(phrase, c + 17 * j, "the")
            fields[f"{key}_bare"] = render_np(phrase, c + 17 * j, "none")
        if self.nps:
            first = self.nps[0]
            fields["be"] = "are" if first.plural else "is"
            fields["k"] = number_word(first.count or 1)
            colour_only = first.shape is None and first.colour is not None
            fields["attr"] = pick(COLOUR_WORDS[first.colour], c // 5) if colour_only else fields["a_bare"]
        return TEMPLATES[self.template][1].format(**fields)

    def holds(self, scene: Scene) -> bool:
        """True of `scene` by the strict reading (relations with a clear margin, exact counts)."""
        objects = scene.objects
        if self.total is not None and len(objects) != self.total:
            return False
        if self.colours and set(self.colours) != {o.colour for o in objects}:
            return False
        if self.relation is not None:
            return relation_holds(self.nps[0], self.relation, self.nps[1], scene)
        return all(p.holds(objects) for p in self.nps)

    def clearly_false(self, scene: Scene) -> bool:
        """False by the generous reading, so that a foil is wrong beyond doubt, not just imprecise."""
        objects = scene.objects
        if self.total is not None and "{n}" in TEMPLATES[self.template][1] and len(objects) != self.total:
            return True
        present = {o.colour for o in objects}
        if any(col not in present for col in self.colours):
            return True
        if self.relation is not None:
            return relation_clearly_false(self.nps[0], self.relation, self.nps[1], scene)
        return any(p.clearly_false(objects) for p in self.nps)


def relation_holds(a: NP, relation: str, b: NP, scene: Scene) -> bool:
    """'a <rel> b': some a (or, for 'two a', exactly those two, all of them) clearly <rel> some b."""
    xs, ys = a.select(scene.objects), b.select(scene.objects)
    size = scene.image_size
    if not a.plural:
        return any(clearly_holds(relation, x, y, size) for x in xs for y in ys if x is not y)
    return len(xs) == a.count and any(all(clearly_holds(relation, x, y, size) for x in xs) for y in ys if y not in xs)


def relation_clearly_false(a: NP, relation: str, b: NP, scene: Scene) -> bool:
    """No object fitting `a` lies even slightly in direction `relation` of any object fitting `b`."""
    xs, ys = a.select(scene.objects), b.select(scene.objects)
    if a.plural and len(xs) != a.count:
        return True
    return all(clearly_fails(relation, x, y) for x in xs for y in ys if x is not y)


# ----------------------------------------------------------------------------- generators
# Each takes (scene, rng) and returns a true Caption, or None when the aspect does not apply.

NAMED: tuple[Pattern, ...] = (("colour", "shape"), ("size", "colour", "shape"))


def _template(rng: np.random.Generator, keys: list[str]) -> str:
    return keys[int(rng.integers(len(keys)))]


def _choice(rng: np.random.Generator) -> int:
    return int(rng.integers(CHOICE_RANGE))


def _count_caption(scene: Scene, rng: np.random.Generator) -> Caption | None:
    objects = scene.objects
    obj = objects[int(rng.integers(len(objects)))]
    named = describe(obj, NAMED[int(rng.integers(2))])
    if len(objects) == 1:
        template = _template(rng, ["count_single", "count_only_one"])
        return Caption(template, nps=(named.replace(count=1),), total=1, choice=_choice(rng))
    # Bare counts ("three objects") match a third of all images, useless for retrieval: keep them rare.
    bare = rng.random() < 0.25
    keys = ["count_there_are", "count_in_total"] if bare else ["count_one_of_them", "count_including"]
    template = _template(rng, keys)
    nps = (named,) if template in ("count_one_of_them", "count_including") else ()
    return Caption(template, nps=nps, total=len(objects), choice=_choice(rng))


def _relation_caption(scene: Scene, rng: np.random.Generator) -> Caption | None:
    objects, size = scene.objects, scene.image_size
    template = _template(rng, ["rel_plain", "rel_there", "rel_the", "rel_we_see"])
    if rng.random() < 0.5:  # prefer a plural subject ("two blue squares above a red circle") when one exists
        groups: dict[tuple[str, str], list] = {}
        for o in objects:
            groups.setdefault((o.colour, o.shape), []).append(o)
        for (colour, shape), members in groups.items():
            if len(members) < 2:
                continue
            for y in rng.permutation(len(objects)).tolist():
                anchor = objects[y]
                if anchor in members:
                    continue
                rels = [r for r in RELATIONS if all(clearly_holds(r, m, anchor, size) for m in members)]
                b = choose_description(rng, anchor, objects)
                if rels and b is not None:
                    a = NP(shape=shape, colour=colour, count=len(members))
                    rel = rels[int(rng.integers(len(rels)))]
                    return Caption(template, nps=(a, b), relation=rel, choice=_choice(rng))
    pairs = [(i, j) for i in range(len(objects)) for j in range(len(objects)) if i != j]
    for k in rng.permutation(len(pairs)).tolist():
        x, y = objects[pairs[k][0]], objects[pairs[k][1]]
        rels = [r for r in RELATIONS if clearly_holds(r, x, y, size)]
        a, b = choose_description(rng, x, objects), choose_description(rng, y, objects)
        if rels and a is not None and b is not None:
            rel = rels[int(rng.integers(len(rels)))]
            return Caption(template, nps=(a, b), relation=rel, choice=_choice(rng))
    return None


def _colours_caption(scene: Scene, rng: np.random.Generator) -> Caption | None:
    present = list(dict.fromkeys(o.colour for o in scene.objects))
    colours = tuple(present[i] for i in rng.permutation(len(present)).tolist())
    if len(scene.objects) == 1:
        keys = ["colours_single"]
    else:
        keys = ["colours_in", "colours_list"] + (["colours_are"] if len(colours) >= 2 else ["colours_all"])
    return Caption(_template(rng, keys), colours=colours, choice=_choice(rng))


def _object_caption(scene: Scene, rng: np.random.Generator) -> Caption | None:
    obj = scene.objects[int(rng.integers(len(scene.objects)))]
    pattern = NAMED[1] if rng.random() < 0.7 else NAMED[0]
    keys = ["object_there_is", "object_picture", "object_we_can_see", "object_visible"]
    return Caption(_template(rng, keys), nps=(describe(obj, pattern),), choice=_choice(rng))


def _inventory_caption(scene: Scene, rng: np.random.Generator) -> Caption | None:
    counts = Counter((o.colour, o.shape) for o in scene.objects)
    groups = list(counts.items())
    nps = tuple(
        NP(shape=shape, colour=colour, count=k)
        for (colour, shape), k in (groups[i] for i in rng.permutation(len(groups)).tolist())
    )
    keys = ["inventory_list", "inventory_image", "inventory_background"]
    return Caption(_template(rng, keys), nps=nps, total=len(scene.objects), choice=_choice(rng))


def _group_caption(scene: Scene, rng: np.random.Generator) -> Caption | None:
    objects = scene.objects
    options: list[NP] = []
    for pattern in (("colour",), ("shape",), ("colour", "shape")):
        seen = Counter(describe(o, pattern) for o in objects)
        options += [p.replace(count=k) for p, k in seen.items() if k >= 2]
    if not options:
        return None
    phrase = options[int(rng.integers(len(options)))]
    return Caption(_template(rng, ["group_there_are", "group_of_the"]), nps=(phrase,), choice=_choice(rng))


GENERATORS: dict[str, Callable[[Scene, np.random.Generator], Caption | None]] = {
    "relation": _relation_caption,
    "count": _count_caption,
    "colours": _colours_caption,
    "object": _object_caption,
    "inventory": _inventory_caption,
    "group": _group_caption,
}


def make_captions(scene: Scene, rng: np.random.Generator, k: int = CAPTIONS_PER_IMAGE) -> list[Caption]:
    """`k` true captions with distinct texts, each from a different aspect while aspects last.

    A relation caption is always included when the scene allows one (relations are what
    bag-of-words retrieval cannot get right); the others rotate in a random order.
    """
    others = [a for a in GENERATORS if a != "relation"]
    order = ["relation"] + [others[i] for i in rng.permutation(len(others)).tolist()]
    chosen: list[Caption] = []
    texts: set[str] = set()
    for _ in range(40):  # rounds over the aspects; a round adds at most one caption per aspect
        for aspect in list(order):
            caption = GENERATORS[aspect](scene, rng)
            if caption is None:
                order.remove(aspect)
                continue
            text = caption.text()
            if text in texts:
                continue
            if not caption.holds(scene):
                raise AssertionError(f"generated a false caption {text!r} for {scene}")
            chosen.append(caption)
            texts.add(text)
            if len(chosen) == k:
                return [chosen[i] for i in rng.permutation(k).tolist()]
    raise RuntimeError(f"could not write {k} distinct captions for {scene}")
