"""The built-in "scenes" dataset: captioned synthetic images of coloured shapes, with VQA and foils.

A procedurally generated stand-in for COCO-style image-text data that needs no download:
1-4 shapes (8 kinds, 10 colours, 2 sizes) per image, five true captions per image, VQAv2-style
questions, COCO detection boxes, hard-negative foil captions for the test splits, and a
`test_novel` split whose images hold colour-shape combinations never seen in training.

    from vlp.data.scenes import generate_scenes, scenes_are_cached
    if not scenes_are_cached("data/scenes", seed=0):
        generate_scenes("data/scenes", seed=0)

Modules: vocab (names and words), layout (objects and positions), render (PIL drawing),
language (noun phrases), captions, foils, vqa, example (one image's records), writer (files).
"""

from vlp.data.scenes.vocab import HELD_OUT_COMBOS
from vlp.data.scenes.writer import GENERATOR_VERSION, generate_scenes, scenes_are_cached

__all__ = ["GENERATOR_VERSION", "HELD_OUT_COMBOS", "generate_scenes", "scenes_are_cached"]
