"""One dataset example: a scene, its image, and all its annotation records, from (seed, split, index).

Each example draws from its own random streams, seeded by (seed, split, index, stream), so an
image never depends on which worker made it or on how many images came before it, and changing
how captions are written never moves an object.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from vlp.data.scenes.captions import make_captions
from vlp.data.scenes.foils import make_foil
from vlp.data.scenes.layout import Scene, sample_scene
from vlp.data.scenes.render import render_scene
from vlp.data.scenes.vocab import SHAPES
from vlp.data.scenes.vqa import annotate, make_questions

SPLITS: tuple[str, ...] = ("train", "val", "test", "test_novel")
FOIL_SPLITS: tuple[str, ...] = ("test", "test_novel")
NOVEL_SPLIT = "test_novel"
STREAMS = ("layout", "render", "captions", "vqa", "foils")
# Ids derived from the global image id leave room for up to 10 objects / questions per image.
SENTS_PER_ID, QUESTIONS_PER_ID, OBJECTS_PER_ID = 5, 10, 10
CATEGORY_IDS = {shape: i + 1 for i, shape in enumerate(SHAPES)}


def image_filename(split: str, index: int) -> str:
    return f"{split}_{index:06d}.png"


def tokenize(text: str) -> list[str]:
    """Karpathy-style tokens: lowercase words, punctuation dropped."""
    return re.findall(r"[a-z0-9]+", text.lower())


def example_rngs(seed: int, split: str, index: int) -> dict[str, np.random.Generator]:
    seq = np.random.SeedSequence([seed, SPLITS.index(split), index])
    return {name: np.random.default_rng(child) for name, child in zip(STREAMS, seq.spawn(len(STREAMS)))}


@dataclass
class Records:
    """Everything one example (or a chunk of examples) contributes to the JSON files."""

    karpathy: list[dict[str, Any]] = field(default_factory=list)
    questions: list[dict[str, Any]] = field(default_factory=list)
    answers: list[dict[str, Any]] = field(default_factory=list)
    foils: list[dict[str, Any]] = field(default_factory=list)
    coco_images: list[dict[str, Any]] = field(default_factory=list)
    coco_objects: list[dict[str, Any]] = field(default_factory=list)

    def extend(self, other: Records) -> None:
        for name in self.__dataclass_fields__:
            getattr(self, name).extend(getattr(other, name))


def make_example(
    seed: int, split: str, index: int, image_id: int, image_size: int
) -> tuple[Image.Image, Scene, Records]:
    rngs = example_rngs(seed, split, index)
    novel = split == NOVEL_SPLIT
    scene = sample_scene(rngs["layout"], image_size, novel=novel)
    image = render_scene(scene, rngs["render"])
    captions = make_captions(scene, rngs["captions"])
    filename = image_filename(split, index)
    out = Records()

    sentences = []
    for j, caption in enumerate(captions):
        raw = caption.text()
        sentid = image_id * SENTS_PER_ID + j
        sentences.append({"raw": raw, "tokens": tokenize(raw), "imgid": image_id, "sentid": sentid})
    out.karpathy.append(
        {
            "filepath": f"images/{split}",
            "filename": filename,
            "imgid": image_id,
            "cocoid": image_id,
            "split": split,
            "sentids": [s["sentid"] for s in sentences],
            "sentences": sentences,
        }
    )

    if split in FOIL_SPLITS:
        for caption, sentence in zip(captions, sentences):
            foil = make_foil(caption, scene, rngs["foils"])
            out.foils.append(
                {
                    "image_id": image_id,
                    "sentid": sentence["sentid"],
                    "caption": sentence["raw"],
                    "foil": foil.caption.text(),
                    "kind": foil.kind,
                }
            )

    for q, question in enumerate(make_questions(scene, rngs["vqa"], novel)):
        qid = image_id * QUESTIONS_PER_ID + q
        answers, majority = annotate(question, rngs["vqa"])
        out.questions.append({"image_id": image_id, "question": question.text, "question_id": qid})
        out.answers.append(
            {
                "question_id": qid,
                "image_id": image_id,
                "question_type": question.question_type,
                "answer_type": question.answer_type,
                "multiple_choice_answer": majority,
                "answers": [
                    {"answer": a, "answer_confidence": "yes", "answer_id": k + 1} for k, a in enumerate(answers)
                ],
            }
        )

    out.coco_images.append({"id": image_id, "file_name": filename, "width": image_size, "height": image_size})
    for k, obj in enumerate(scene.objects):
        x0, y0, x1, y1 = obj.box
        out.coco_objects.append(
            {
                "id": image_id * OBJECTS_PER_ID + k,
                "image_id": image_id,
                "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                "area": round(obj.area, 2),
                "category_id": CATEGORY_IDS[obj.shape],
                "iscrowd": 0,
                "attributes": {"shape": obj.shape, "colour": obj.colour, "size": obj.size},
            }
        )
    return image, scene, out
