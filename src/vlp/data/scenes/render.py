"""Drawing a scene with PIL: a pale, plain or faintly textured background and outlined shapes.

Shapes are drawn at SUPERSAMPLE times the output size and box-filtered down, which gives
anti-aliased edges for the cost of one resize (a 64-pixel image takes well under a
millisecond). The texture is kept faint so that colour stays the only cue for colour words.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from vlp.data.scenes.layout import Scene
from vlp.data.scenes.vocab import COLOURS

SUPERSAMPLE = 4
# Pale, nearly neutral backgrounds: none can be mistaken for an object colour.
BACKGROUNDS: tuple[tuple[int, int, int], ...] = (
    (238, 238, 234),
    (242, 236, 222),
    (226, 233, 241),
    (230, 240, 230),
    (240, 230, 236),
    (222, 222, 222),
)
# An object's colour varies in brightness (all channels together) and only slightly per channel,
# so "gray" never drifts into a tint of another named colour.
BRIGHTNESS_JITTER = 15
CHANNEL_JITTER = 4
TEXTURE_AMPLITUDE = 7.0


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    base = np.asarray(BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))], dtype=np.float32)
    base = base + rng.uniform(-6, 6, size=3).astype(np.float32)
    kind = int(rng.integers(3))  # 0 plain, 1 faint noise, 2 faint stripes
    if kind == 1:
        texture = rng.normal(0.0, TEXTURE_AMPLITUDE / 2, size=(size, size, 1)).astype(np.float32)
    elif kind == 2:
        angle = float(rng.uniform(0, math.pi))
        period = float(rng.uniform(5, 12)) * size / 64
        ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
        phase = (xs * math.cos(angle) + ys * math.sin(angle)) * (2 * math.pi / period)
        texture = (TEXTURE_AMPLITUDE * np.sin(phase))[..., None]
    else:
        texture = np.zeros((size, size, 1), dtype=np.float32)
    return np.clip(base[None, None, :] + texture, 0, 255).astype(np.uint8)


def render_scene(scene: Scene, rng: np.random.Generator) -> Image.Image:
    """The RGB image of `scene`; `rng` only chooses background and colour jitter, never geometry."""
    size = scene.image_size
    image = Image.fromarray(_background(rng, size)).convert("RGBA")
    big = size * SUPERSAMPLE
    layer = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    for obj in scene.objects:
        jitter = rng.integers(-BRIGHTNESS_JITTER, BRIGHTNESS_JITTER + 1) + rng.integers(
            -CHANNEL_JITTER, CHANNEL_JITTER + 1, size=3
        )
        fill = tuple(int(v) for v in np.clip(np.asarray(COLOURS[obj.colour]) + jitter, 0, 255))
        outline = tuple(int(v * 0.55) for v in fill)
        draw.polygon(obj.polygon(SUPERSAMPLE), fill=fill + (255,), outline=outline + (255,), width=SUPERSAMPLE)
    image.alpha_composite(layer.resize((size, size), Image.Resampling.BOX))
    return image.convert("RGB")
