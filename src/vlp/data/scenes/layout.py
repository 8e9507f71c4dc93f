"""Scene layout: which objects an image holds, where they are, and how they relate in space.

Every shape is a polygon (a circle is a 48-gon), so drawing, bounding boxes, areas and
spatial relations all derive from one geometry. Positions are rejection-sampled so that
bounding boxes never overlap, with a margin, which keeps objects countable and relations
well defined.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np

from vlp.data.scenes.vocab import (
    ALL_COMBOS,
    HELD_OUT_COMBOS,
    MAX_OBJECTS,
    SEEN_COMBOS,
    SIZE_FRACTION,
)

Point = tuple[float, float]

# Spatial relations are judged on bounding-box centres. A relation is *stated* only when the
# centres differ by at least RELATION_MARGIN * image_size along its axis and the direction is
# within ~63 degrees of that axis (a reader says "left of", not "below", for an object that
# is far left and a little lower); it is *denied* (a foil, a "no" answer) only when the
# centres do not differ in its direction at all. Everything in between is ambiguous and never
# stated, denied or asked about.
RELATION_MARGIN = 0.15
RELATION_SLOPE = 2.0  # the offset across the axis may be at most this times the offset along it
BOX_GAP = 0.05  # minimum gap between two bounding boxes, as a fraction of the image side
BORDER = 0.03  # minimum gap between a box and the image border
NUM_OBJECTS_P = (0.15, 0.30, 0.30, 0.25)  # P(1..4 objects)
REPEAT_P = 0.3  # P(an object repeats an earlier colour-shape pair), so plurals occur


def _regular(n: int, start_deg: float, radius: float = 1.0) -> list[Point]:
    angles = [math.radians(start_deg + 360 * k / n) for k in range(n)]
    return [(radius * math.cos(a), radius * math.sin(a)) for a in angles]


def _star() -> list[Point]:
    outer = _regular(5, -90)
    inner = _regular(5, -90 + 36, radius=0.42)
    return [p for pair in zip(outer, inner) for p in pair]


def _heart() -> list[Point]:
    ts = np.linspace(0, 2 * math.pi, 48, endpoint=False)
    xs = 16 * np.sin(ts) ** 3
    ys = -(13 * np.cos(ts) - 5 * np.cos(2 * ts) - 2 * np.cos(3 * ts) - np.cos(4 * ts))
    return list(zip(xs.tolist(), ys.tolist()))


_RAW_SHAPES = {
    "circle": lambda: _regular(48, 0),
    "square": lambda: [(-1, -1), (1, -1), (1, 1), (-1, 1)],
    "triangle": lambda: [(0, -1), (1, 0.8), (-1, 0.8)],
    "diamond": lambda: [(0, -1), (0.72, 0), (0, 1), (-0.72, 0)],
    "star": _star,
    "cross": lambda: [
        (-0.32, -1), (0.32, -1), (0.32, -0.32), (1, -0.32), (1, 0.32), (0.32, 0.32),
        (0.32, 1), (-0.32, 1), (-0.32, 0.32), (-1, 0.32), (-1, -0.32), (-0.32, -0.32),
    ],
    "hexagon": lambda: _regular(6, 0),
    "heart": _heart,
}
# Squares fill their box completely; shrink them a little so a "large square" does not look
# much heavier than a "large circle" of the same nominal size.
_SHAPE_SCALE = {"square": 0.85, "hexagon": 0.95}


@cache
def unit_polygon(shape: str) -> tuple[Point, ...]:
    """Vertices with the bounding box centred on (0, 0) and the longer half-side equal to the shape scale."""
    pts = np.asarray(_RAW_SHAPES[shape](), dtype=np.float64)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    pts = (pts - (lo + hi) / 2) / ((hi - lo).max() / 2) * _SHAPE_SCALE.get(shape, 1.0)
    return tuple((float(x), float(y)) for x, y in pts)


@cache
def _unit_half_extent(shape: str) -> Point:
    pts = np.asarray(unit_polygon(shape))
    return float(pts[:, 0].max()), float(pts[:, 1].max())


@cache
def _unit_area(shape: str) -> float:
    x, y = np.asarray(unit_polygon(shape)).T
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


@dataclass(frozen=True)
class SceneObject:
    """One drawn object; `cx, cy` is the centre of its bounding box, `radius` scales its unit polygon."""

    shape: str
    colour: str
    size: str
    cx: float
    cy: float
    radius: float

    @property
    def box(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) in pixels."""
        hx, hy = _unit_half_extent(self.shape)
        dx, dy = hx * self.radius, hy * self.radius
        return self.cx - dx, self.cy - dy, self.cx + dx, self.cy + dy

    @property
    def area(self) -> float:
        """Area of the drawn polygon in pixels (COCO's `area` is the shape's, not the box's)."""
        return _unit_area(self.shape) * self.radius**2

    def polygon(self, scale: float = 1.0) -> list[Point]:
        cx, cy, r = self.cx, self.cy, self.radius
        return [((cx + x * r) * scale, (cy + y * r) * scale) for x, y in unit_polygon(self.shape)]


@dataclass(frozen=True)
class Scene:
    image_size: int
    objects: tuple[SceneObject, ...]

    @property
    def combos(self) -> set[tuple[str, str]]:
        return {(o.colour, o.shape) for o in self.objects}


def offset(relation: str, a: SceneObject, b: SceneObject) -> float:
    """How far `a` lies from `b` in the direction of `relation` (positive: in that direction)."""
    if relation == "left":
        return b.cx - a.cx
    if relation == "right":
        return a.cx - b.cx
    if relation == "above":
        return b.cy - a.cy
    if relation == "below":
        return a.cy - b.cy
    raise ValueError(f"unknown relation {relation!r}")


def clearly_holds(relation: str, a: SceneObject, b: SceneObject, image_size: int) -> bool:
    along = offset(relation, a, b)
    across = abs(a.cy - b.cy) if relation in ("left", "right") else abs(a.cx - b.cx)
    return along >= RELATION_MARGIN * image_size and across <= RELATION_SLOPE * along


def clearly_fails(relation: str, a: SceneObject, b: SceneObject) -> bool:
    return offset(relation, a, b) <= 0


def _boxes_apart(a: tuple[float, ...], b: tuple[float, ...], gap: float) -> bool:
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def _place(
    rng: np.random.Generator, shape: str, colour: str, size: str, placed: list[SceneObject], image_size: int
) -> SceneObject | None:
    lo, hi = SIZE_FRACTION[size]
    radius = float(rng.uniform(lo, hi)) * image_size / 2
    hx, hy = _unit_half_extent(shape)
    border, gap = BORDER * image_size, max(2.0, BOX_GAP * image_size)
    for _ in range(40):
        cx = float(rng.uniform(border + hx * radius, image_size - border - hx * radius))
        cy = float(rng.uniform(border + hy * radius, image_size - border - hy * radius))
        obj = SceneObject(shape, colour, size, round(cx, 3), round(cy, 3), round(radius, 3))
        if all(_boxes_apart(obj.box, other.box, gap) for other in placed):
            return obj
    return None


def sample_scene(rng: np.random.Generator, image_size: int, *, novel: bool) -> Scene:
    """1-4 non-overlapping objects; `novel` scenes hold at least one held-out colour-shape combo.

    Non-novel scenes draw only seen combos. A novel scene places its held-out object first, so
    it is never the one dropped when the canvas is too full for the rest.
    """
    n = int(rng.choice(np.arange(1, MAX_OBJECTS + 1), p=NUM_OBJECTS_P))
    pool = ALL_COMBOS if novel else SEEN_COMBOS
    combos: list[tuple[str, str]] = []
    if novel:
        combos.append(HELD_OUT_COMBOS[int(rng.integers(len(HELD_OUT_COMBOS)))])
    while len(combos) < n:
        if combos and rng.random() < REPEAT_P:
            combos.append(combos[int(rng.integers(len(combos)))])
        else:
            combos.append(pool[int(rng.integers(len(pool)))])
    placed: list[SceneObject] = []
    for colour, shape in combos:
        size = "large" if rng.random() < 0.5 else "small"
        obj = _place(rng, shape, colour, size, placed, image_size)
        if obj is None and size == "large":
            obj = _place(rng, shape, colour, "small", placed, image_size)
        if obj is not None:
            placed.append(obj)
    if not placed:  # cannot happen for the first object on an empty canvas, but never return an empty scene
        raise RuntimeError("could not place any object")
    return Scene(image_size, tuple(placed))
