"""Attribute-binding accuracy on foil captions: does the model score an image's true caption above
the same words with attributes or relations swapped ("a red circle left of a blue square" vs "a
blue circle left of a red square")? Bag-of-words matching cannot tell them apart; binding can.

Two scorers: `itc` (cosine similarity of the dual-encoder embeddings) and `itm` (the fused
matched-probability of the ITM head). Chance is 50 %; ties count as failures.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from vlp.data.datasets import ImageCollator, ImageDataset
from vlp.data.images import ImageTransform
from vlp.data.records import ImageRecord
from vlp.data.tokenizer import TextTokenizer
from vlp.models import ImageTextModel


def load_foils(path: Path) -> list[dict]:
    items = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(items, list) or not all({"image_id", "caption", "foil"} <= set(x) for x in items):
        raise ValueError(f"{path}: expected a list of {{image_id, caption, foil, kind}} objects")
    return items


def pixel_loader(records: list[ImageRecord], image_size: int, batch_size: int = 64) -> Iterable[tuple[Any, torch.Tensor, int]]:
    """(pixels, image_ids, skipped) batches of the given images."""
    dataset = ImageDataset(records, ImageTransform(image_size))
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=ImageCollator())


def foils_by_image(foils: list[dict]) -> dict[int, list[dict]]:
    by_image: dict[int, list[dict]] = defaultdict(list)
    for item in foils:
        by_image[int(item["image_id"])].append(item)
    return by_image


@torch.no_grad()
def foil_binding_accuracy(
    model: ImageTextModel,
    tokenizer: TextTokenizer,
    images: Iterable[tuple[Any, torch.Tensor, int]],
    foils: list[dict],
    max_length: int,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Accuracy (%) of caption-over-foil for each available scorer, overall and per foil kind.

    ``images`` yields ``(image_input, image_ids, skipped)`` batches -- pixels (`pixel_loader`) or
    region features -- for the images the foils belong to.
    """
    model.eval()
    by_image = foils_by_image(foils)
    scorers = (["itc"] if model.cfg.contrastive else []) + (["itm"] if model.itm_head is not None else [])
    wins: dict[str, list[bool]] = {s: [] for s in scorers}
    kinds: list[str] = []
    for pixels, image_ids, _ in images:
        items = [by_image.get(int(i), []) for i in image_ids]
        if not any(items):
            continue
        counts = torch.tensor([len(x) for x in items])
        captions = [x["caption"] for group in items for x in group]
        foiled = [x["foil"] for group in items for x in group]
        kinds.extend(x.get("kind", "unknown") for group in items for x in group)
        ids_c, mask_c = tokenizer.encode_batch(captions, max_length)
        ids_f, mask_f = tokenizer.encode_batch(foiled, max_length)
        # pad both to one length so they can share a forward pass
        length = max(ids_c.shape[1], ids_f.shape[1])
        pad = lambda t: torch.nn.functional.pad(t, (0, length - t.shape[1]))  # noqa: E731
        ids = torch.cat([pad(ids_c), pad(ids_f)]).to(device)
        mask = torch.cat([pad(mask_c), pad(mask_f)]).to(device)
        feats = model.pair_features(pixels.to(device), ids, mask, unimodal=model.cfg.contrastive)  # pixels or regions
        n = len(captions)
        if "itc" in wins:
            img = model.project_image(feats.image).repeat_interleave(counts.to(device), dim=0)
            txt = model.project_text(feats.text)
            score = (img * txt[:n]).sum(-1), (img * txt[n:]).sum(-1)
            wins["itc"].extend((score[0] > score[1]).tolist())
        if "itm" in wins:
            # each image once per foil pair, for the captions and then again for the foils
            rows = torch.arange(len(items), device=device).repeat_interleave(counts.to(device))
            image_in = feats.image_for_fusion.select(torch.cat([rows, rows]))
            probs = model.itm_logits(model.fuse(image_in, feats.text_for_fusion, mode="bidirectional")).softmax(-1)[:, 1]
            wins["itm"].extend((probs[:n] > probs[n:]).tolist())
    result: dict[str, float] = {"foils": float(len(kinds))}
    for scorer, outcome in wins.items():
        if not outcome:
            continue
        result[f"{scorer}_binding"] = 100.0 * sum(outcome) / len(outcome)
        per_kind: dict[str, list[bool]] = defaultdict(list)
        for kind, ok in zip(kinds, outcome):
            per_kind[kind].append(ok)
        for kind, oks in sorted(per_kind.items()):
            result[f"{scorer}_binding_{kind}"] = 100.0 * sum(oks) / len(oks)
    return result
