"""Zero-shot image classification with a contrastive (ITC) head, CLIP style.

Each class becomes text through prompt templates ("there is a {name}"); its classifier weight is
the normalised mean of the normalised template embeddings (CLIP's prompt ensembling: averaging in
embedding space smooths over the wording any single prompt happens to favour). An image's logits
are its embedding dotted with every class weight. Accuracy@K counts ties against the image, as
the retrieval metrics do: a collapsed model scores 0, never 100/C.

`scenes_zero_shot` builds two such benchmarks from the built-in scenes ("which shape", "which
colour"; see `scene_labels` for which images get a label) with prompts in the scenes' caption
language, so a model pre-trained on scenes captions knows every prompt word.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch

from vlp.data.readers import read_karpathy
from vlp.data.scenes.vocab import COLOUR_NAMES, SHAPES
from vlp.data.tokenizer import TextTokenizer
from vlp.models import ImageTextModel

# Fields: {name} (the class name) and {article} ("a"/"an" for the word right after it).
SHAPE_TEMPLATES: tuple[str, ...] = (
    "{article} {name}",
    "there is {article} {name}",
    "a picture with {article} {name}",
    "we can see {article} {name}",
    "{article} {name} is visible",
)
COLOUR_TEMPLATES: tuple[str, ...] = (
    "{article} {name} shape",
    "there is {article} {name} object",
    "a picture with {article} {name} shape",
    "we can see {article} {name} object",
    "one {name} shape",
    "{name} objects",
    "shapes in {name}",
)
SceneAttribute = Literal["shape", "colour"]


def _check_contrastive(model: Any) -> None:
    if not getattr(getattr(model, "cfg", None), "contrastive", False):
        raise ValueError("zero-shot classification needs a model with a contrastive (ITC) head (model.contrastive=True)")


def prompts(name: str, templates: Sequence[str]) -> list[str]:
    article = "an" if name[:1].lower() in "aeiou" else "a"
    return [t.format(name=name, article=article) for t in templates]


@torch.no_grad()
def class_embeddings(
    model: ImageTextModel,
    tokenizer: TextTokenizer,
    class_names: Sequence[str],
    templates: Sequence[str],
    max_length: int,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
) -> torch.Tensor:
    """[C, E] classifier weights: per class, the normalised mean of its normalised prompt embeddings."""
    _check_contrastive(model)
    if not class_names or not templates:
        raise ValueError("zero-shot classification needs at least one class name and one template")
    model.eval()
    texts = [p for name in class_names for p in prompts(name, templates)]
    ids, mask = tokenizer.encode_batch(texts, max_length)
    chunks = [
        model.encode_text(ids[s : s + batch_size].to(device), mask[s : s + batch_size].to(device)).float()
        for s in range(0, len(texts), batch_size)
    ]
    per_prompt = torch.nn.functional.normalize(torch.cat(chunks), dim=-1).view(len(class_names), len(templates), -1)
    return torch.nn.functional.normalize(per_prompt.mean(dim=1), dim=-1)


@torch.no_grad()
def zero_shot_accuracy(
    model: ImageTextModel,
    images: Iterable[tuple[Any, torch.Tensor, int]],
    labels: Mapping[int, int],
    weights: torch.Tensor,
    ks: Sequence[int] = (1, 5),
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Top-K accuracy (%) of ``images`` (``(image input, image_ids, skipped)`` batches) against
    ``labels`` (image id -> class row of ``weights`` [C, E]); images without a label are ignored."""
    _check_contrastive(model)
    model.eval()
    ranks: list[torch.Tensor] = []
    for image_input, image_ids, _ in images:
        keep = [j for j, i in enumerate(image_ids.tolist()) if int(i) in labels]
        if not keep:
            continue
        target = torch.tensor([labels[int(image_ids[j])] for j in keep], device=weights.device)
        logits = model.encode_image(image_input.to(device)).float()[keep].to(weights.device) @ weights.t()  # [B, C]
        true = logits.gather(1, target[:, None])
        ranks.append((logits >= true).sum(dim=1) - 1)  # other classes scoring at least as high
    if not ranks:
        raise ValueError("no labelled image to classify")
    rank = torch.cat(ranks)
    result = {f"top{k}": 100.0 * (rank < k).double().mean().item() for k in ks}
    result["images"] = float(rank.shape[0])
    return result


def scene_labels(objects_json: Path, attribute: SceneAttribute) -> dict[int, str]:
    """Image id -> label for the images whose objects ALL share one ``attribute`` value.

    Why this choice: the label is then unambiguous and every prompt of the true class is a true
    sentence about the image while every other class's prompts are false ("there is a circle" is
    true, "there is a square" false, whatever the objects' number, size or other attribute). Taking
    e.g. the largest object instead would make "there is a square" true for an image labelled
    "circle" that also holds a small square. Images without objects get no label.
    """
    if attribute not in ("shape", "colour"):
        raise ValueError(f"attribute must be 'shape' or 'colour', got {attribute!r}")
    path = Path(objects_json)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is this a scenes dataset with that split?")
    data = json.loads(path.read_text(encoding="utf-8"))
    values: dict[int, set[str]] = {int(img["id"]): set() for img in data.get("images", [])}
    for ann in data.get("annotations", []):
        value = (ann.get("attributes") or {}).get(attribute)
        if value is None:
            raise ValueError(f"{path}: annotation {ann.get('id')} has no {attribute!r} attribute")
        values.setdefault(int(ann["image_id"]), set()).add(str(value))
    return {image_id: next(iter(found)) for image_id, found in values.items() if len(found) == 1}


@torch.no_grad()
def scenes_zero_shot(
    model: ImageTextModel,
    tokenizer: TextTokenizer,
    scenes_dir: Path,
    split: str = "test",
    image_size: int | None = None,
    max_length: int = 32,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """"Which shape" (8 classes) and "which colour" (10 classes) zero-shot accuracy on a scenes split.

    Keys per benchmark (``shape_``, ``colour_``): ``top1``, ``top5``, ``images`` (labelled images),
    ``chance`` (100 / classes: a uniform guess) and ``majority`` (always answering the most frequent
    label, as the labels need not be balanced).
    """
    from vlp.experiment.foils import pixel_loader

    scenes_dir = Path(scenes_dir)
    size = image_size or int(getattr(model.cfg.image_encoder, "image_size", 0))
    if size <= 0:
        raise ValueError("scenes_zero_shot needs image_size for this image encoder (it has no image_size field)")
    records = read_karpathy(scenes_dir / "dataset_coco.json", splits={split})
    result: dict[str, float] = {}
    for attribute, classes, templates in (("shape", SHAPES, SHAPE_TEMPLATES), ("colour", COLOUR_NAMES, COLOUR_TEMPLATES)):
        names = scene_labels(scenes_dir / f"objects_{split}.json", attribute)  # type: ignore[arg-type]
        labelled = [r for r in records if r.image_id in names]
        if not labelled:
            raise ValueError(f"no image of split {split!r} in {scenes_dir} has a single {attribute}")
        labels = {r.image_id: classes.index(names[r.image_id]) for r in labelled}
        weights = class_embeddings(model, tokenizer, classes, templates, max_length, device, batch_size)
        scores = zero_shot_accuracy(model, pixel_loader(labelled, size, batch_size), labels, weights, device=device)
        most_common = Counter(labels.values()).most_common(1)[0][1]
        scores.update(chance=100.0 / len(classes), majority=100.0 * most_common / len(labels))
        result.update({f"{attribute}_{key}": value for key, value in scores.items()})
    return result


__all__ = [
    "COLOUR_TEMPLATES",
    "SHAPE_TEMPLATES",
    "class_embeddings",
    "prompts",
    "scene_labels",
    "scenes_zero_shot",
    "zero_shot_accuracy",
]
