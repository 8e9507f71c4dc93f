"""Foils: for a true caption, a minimally edited caption that is false of the same image.

Edits come in three tiers, and the first tier with an edit that is *clearly* false wins:

1. swaps inside the sentence (the hardest negatives, same bag of words):
   ``relation_swap`` (left of <-> right of), ``colour_swap``/``shape_swap``/``size_swap``
   between two noun phrases;
2. changes to a value the image does contain elsewhere: ``colour_change``,
   ``shape_change``, ``size_change``, ``count_change``;
3. a colour or shape the image does not contain at all: ``colour_absent``, ``shape_absent``.

Every foil keeps its caption's template and synonym choice, and is verified false against
the scene (Caption.clearly_false) before it is returned.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from vlp.data.scenes.captions import TEMPLATES, Caption
from vlp.data.scenes.language import NP
from vlp.data.scenes.layout import Scene
from vlp.data.scenes.vocab import COLOUR_NAMES, MAX_OBJECTS, OPPOSITE, SHAPES

Edit = tuple[str, Caption]


@dataclass(frozen=True)
class Foil:
    caption: Caption
    kind: str


def _with_np(caption: Caption, index: int, phrase: NP) -> Caption:
    nps = list(caption.nps)
    nps[index] = phrase
    return caption.replace(nps=tuple(nps))


def _swaps(caption: Caption) -> Iterator[Edit]:
    if caption.relation is not None:
        yield "relation_swap", caption.replace(relation=OPPOSITE[caption.relation])
    for i in range(len(caption.nps)):
        for j in range(i + 1, len(caption.nps)):
            a, b = caption.nps[i], caption.nps[j]
            for attr in ("colour", "shape", "size"):
                va, vb = getattr(a, attr), getattr(b, attr)
                if va is not None and vb is not None and va != vb:
                    swapped = _with_np(caption, i, a.replace(**{attr: vb}))
                    yield f"{attr}_swap", _with_np(swapped, j, b.replace(**{attr: va}))


def _changes(caption: Caption, scene: Scene) -> Iterator[Edit]:
    colours = sorted({o.colour for o in scene.objects})
    shapes = sorted({o.shape for o in scene.objects})
    for i, phrase in enumerate(caption.nps):
        for colour in colours if phrase.colour is not None else ():
            if colour != phrase.colour:
                yield "colour_change", _with_np(caption, i, phrase.replace(colour=colour))
        for shape in shapes if phrase.shape is not None else ():
            if shape != phrase.shape:
                yield "shape_change", _with_np(caption, i, phrase.replace(shape=shape))
        if phrase.size is not None:
            other = "small" if phrase.size == "large" else "large"
            yield "size_change", _with_np(caption, i, phrase.replace(size=other))
        if phrase.plural:  # stay plural, so the sentence keeps its grammar
            for k in range(2, MAX_OBJECTS + 1):
                if k != phrase.count:
                    yield "count_change", _with_np(caption, i, phrase.replace(count=k))
    if caption.total is not None and caption.total >= 2 and "{n}" in TEMPLATES[caption.template][1]:
        for k in range(2, MAX_OBJECTS + 1):
            if k != caption.total:
                yield "count_change", caption.replace(total=k)


def _absent(caption: Caption, scene: Scene, rng: np.random.Generator) -> Iterator[Edit]:
    colours = [c for c in COLOUR_NAMES if c not in {o.colour for o in scene.objects}]
    shapes = [s for s in SHAPES if s not in {o.shape for o in scene.objects}]
    for i, phrase in enumerate(caption.nps):
        if phrase.colour is not None and colours:
            colour = colours[int(rng.integers(len(colours)))]
            yield "colour_absent", _with_np(caption, i, phrase.replace(colour=colour))
        if phrase.shape is not None and shapes:
            shape = shapes[int(rng.integers(len(shapes)))]
            yield "shape_absent", _with_np(caption, i, phrase.replace(shape=shape))
    for i in range(len(caption.colours)):
        listed = list(caption.colours)
        listed[i] = colours[int(rng.integers(len(colours)))]
        yield "colour_absent", caption.replace(colours=tuple(listed))


def make_foil(caption: Caption, scene: Scene, rng: np.random.Generator) -> Foil:
    """A foil for `caption` from the first tier that has one; random within the tier."""
    text = caption.text()
    for tier in (_swaps(caption), _changes(caption, scene), _absent(caption, scene, rng)):
        valid = [(kind, c) for kind, c in tier if c.clearly_false(scene) and c.text() != text]
        if valid:
            kind, foil = valid[int(rng.integers(len(valid)))]
            return Foil(foil, kind)
    raise RuntimeError(f"no foil for {text!r} in {scene}")
