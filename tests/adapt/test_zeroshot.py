"""Zero-shot classification: a hand-built model that must score 100 %, ties counted against the image,
and the scenes "which shape" / "which colour" benchmarks with a tiny CLIP."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vlp.adapt.zeroshot import COLOUR_TEMPLATES, SHAPE_TEMPLATES, class_embeddings, prompts, scene_labels, scenes_zero_shot, zero_shot_accuracy
from vlp.data.readers import read_karpathy
from vlp.data.scenes.vocab import COLOUR_NAMES, SHAPES
from vlp.data.tokenizer import TextTokenizer
from vlp.models import build_model, model_preset

CLASSES = ("circle", "square", "triangle", "star")
TEMPLATES = ("there is {article} {name}", "a picture with {article} {name}", "{article} {name} is visible")


class BagOfWords(nn.Module):
    """Hand-built dual encoder: a text is the normalised bag of its word ids; an image carries the id
    of its class word in pixel [0, 0, 0] and embeds as that word's one-hot vector."""

    def __init__(self, vocab_size: int, specials: int = 7) -> None:
        super().__init__()
        self.cfg = SimpleNamespace(contrastive=True)
        self.vocab_size, self.specials = vocab_size, specials

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        bag = (F.one_hot(input_ids, self.vocab_size) * attention_mask[..., None]).sum(dim=1).float()
        bag[:, : self.specials] = 0  # [PAD] [CLS] [SEP] ...
        return F.normalize(bag, dim=-1)

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return F.one_hot(pixels[:, 0, 0, 0].long(), self.vocab_size).float()


@pytest.fixture(scope="module")
def tokenizer() -> TextTokenizer:
    return TextTokenizer.train_wordpiece([p for name in CLASSES for p in prompts(name, TEMPLATES)], vocab_size=200)


def _images(tokenizer: TextTokenizer, labels: list[int]):
    pixels = torch.zeros(len(labels), 3, 4, 4)
    pixels[:, 0, 0, 0] = torch.tensor([float(tokenizer.token_to_id(CLASSES[c])) for c in labels])
    ids = torch.arange(100, 100 + len(labels))
    return [(pixels[:5], ids[:5], 0), (pixels[5:], ids[5:], 1)], {int(i): c for i, c in zip(ids, labels)}


def test_hand_built_model_scores_100_and_wrong_labels_score_0(tokenizer: TextTokenizer) -> None:
    model = BagOfWords(tokenizer.vocab_size)
    weights = class_embeddings(model, tokenizer, CLASSES, TEMPLATES, 16, batch_size=5)
    assert weights.shape == (4, tokenizer.vocab_size) and torch.allclose(weights.norm(dim=-1), torch.ones(4))
    loader, labels = _images(tokenizer, [0, 1, 2, 3, 3, 2, 1, 0, 0])
    got = zero_shot_accuracy(model, loader, labels, weights, ks=(1, 2))
    assert got == {"top1": 100.0, "top2": 100.0, "images": 9.0}
    shifted = {i: (c + 1) % 4 for i, c in labels.items()}
    assert zero_shot_accuracy(model, loader, shifted, weights)["top1"] == 0.0


def test_ties_count_against_the_image(tokenizer: TextTokenizer) -> None:
    model = BagOfWords(tokenizer.vocab_size)
    loader, labels = _images(tokenizer, [0, 1, 2])
    collapsed = F.normalize(torch.ones(4, tokenizer.vocab_size), dim=-1)
    assert zero_shot_accuracy(model, loader, labels, collapsed, ks=(1, 4)) == {"top1": 0.0, "top4": 100.0, "images": 3.0}


def test_scene_labels_are_unambiguous(tiny_scenes: Path) -> None:
    objects = json.loads((tiny_scenes / "objects_test.json").read_text())
    for attribute, vocabulary in (("shape", SHAPES), ("colour", COLOUR_NAMES)):
        labels = scene_labels(tiny_scenes / "objects_test.json", attribute)
        assert labels and set(labels.values()) <= set(vocabulary)
        for image in objects["images"]:
            found = {a["attributes"][attribute] for a in objects["annotations"] if a["image_id"] == image["id"]}
            assert (image["id"] in labels) == (len(found) == 1)
            if len(found) == 1:
                assert labels[image["id"]] == found.pop()


def test_scenes_zero_shot_with_tiny_clip(tiny_scenes: Path) -> None:
    captions = [c for r in read_karpathy(tiny_scenes / "dataset_coco.json", splits={"train"}) for c in r.captions]
    tokenizer = TextTokenizer.train_wordpiece(captions, vocab_size=200)
    for text in [p for n in SHAPES for p in prompts(n, SHAPE_TEMPLATES)] + [p for n in COLOUR_NAMES for p in prompts(n, COLOUR_TEMPLATES)]:
        for word in text.split():  # every prompt word is a whole word of the captions' vocabulary
            assert tokenizer.token_to_id(word) is not None, (text, word)
    cfg = model_preset("clip_tiny")
    torch.manual_seed(0)
    model = build_model(replace(cfg, text_encoder=replace(cfg.text_encoder, vocab_size=tokenizer.vocab_size)))
    first = scenes_zero_shot(model, tokenizer, tiny_scenes, "test", batch_size=7)
    assert first == scenes_zero_shot(model, tokenizer, tiny_scenes, "test")  # deterministic, batch-size free
    assert first["shape_chance"] == 12.5 and first["colour_chance"] == 10.0
    for task in ("shape", "colour"):
        assert first[f"{task}_images"] > 0
        assert 0.0 <= first[f"{task}_top1"] <= first[f"{task}_top5"] <= 100.0
        assert first[f"{task}_chance"] <= first[f"{task}_majority"] <= 100.0


def test_model_without_itc_is_refused(tokenizer: TextTokenizer) -> None:
    cfg = model_preset("vilt_tiny")
    model = build_model(replace(cfg, text_encoder=replace(cfg.text_encoder, vocab_size=tokenizer.vocab_size)))
    with pytest.raises(ValueError, match="contrastive"):
        class_embeddings(model, tokenizer, CLASSES, TEMPLATES, 16)
