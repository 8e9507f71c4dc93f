"""Retrieval evaluation of a trained model on a split.

`embed_gallery` / `evaluate_gallery`: dual-encoder (ITC) embeddings and recall@K, as `vlp eval` runs.
`evaluate_retrieval`: one call for ITC-only and ITM (re-ranked or exhaustive) metrics of any model
with an ITC or ITM head, see `vlp.adapt.retrieval`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader

from vlp.adapt.retrieval import ItmScore, encode_gallery, itm_rerank, itm_score_matrix, rerank_candidates
from vlp.data.datasets import ImageCollator, ImageDataset
from vlp.data.images import ImageTransform
from vlp.data.records import ImageRecord
from vlp.data.tokenizer import TextTokenizer
from vlp.experiment.foils import pixel_loader
from vlp.metrics import retrieval_recall
from vlp.metrics.retrieval import RetrievalRanks, metrics_from_ranks, retrieval_metrics_from_candidates, retrieval_metrics_from_scores, retrieval_ranks
from vlp.models import ImageTextModel


@dataclass
class Gallery:
    """Embedded evaluation split. `records[i]` is the image of `image_embeds[i]`; `captions[j]` belongs to
    image `text_to_image[j]`. Images that could not be read are absent, with their captions."""

    records: list[ImageRecord]
    captions: list[str]
    text_to_image: torch.Tensor
    image_embeds: torch.Tensor
    text_embeds: torch.Tensor
    skipped_images: int


@torch.no_grad()
def embed_gallery(
    model: ImageTextModel,
    records: list[ImageRecord],
    tokenizer: TextTokenizer,
    image_size: int,
    max_length: int,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
) -> Gallery:
    """ITC embeddings of a split (on the CPU), for recall@K and report examples."""
    if not model.cfg.contrastive:
        raise ValueError("embed_gallery needs a model with a contrastive (ITC) head")
    loader = DataLoader(
        ImageDataset(records, ImageTransform(image_size)),
        batch_size=batch_size,
        collate_fn=ImageCollator(),
        num_workers=num_workers,
    )
    captions = {record.image_id: record.captions for record in records}
    features = encode_gallery(model, loader, captions, tokenizer, max_length, device=device, text_batch_size=batch_size, fusion=False)
    by_id = {record.image_id: record for record in records}
    assert features.image_embeds is not None and features.text_embeds is not None
    return Gallery(
        records=[by_id[int(i)] for i in features.image_ids],
        captions=features.captions,
        text_to_image=features.text_to_image,
        image_embeds=features.image_embeds.cpu(),
        text_embeds=features.text_embeds.cpu(),
        skipped_images=features.skipped_images,
    )


def evaluate_gallery(gallery: Gallery, ks: tuple[int, ...] = (1, 5, 10), chunk_size: int = 1024) -> dict[str, float]:
    if not gallery.records:
        raise ValueError("no readable image in the evaluation split")
    metrics = retrieval_recall(gallery.image_embeds, gallery.text_embeds, gallery.text_to_image, ks=ks, chunk_size=chunk_size)
    metrics["images"] = float(len(gallery.records))
    metrics["captions"] = float(len(gallery.captions))
    return metrics


@torch.no_grad()
def evaluate_retrieval(
    model: ImageTextModel,
    records: list[ImageRecord],
    tokenizer: TextTokenizer,
    image_size: int,
    max_length: int,
    k_test: int | None = None,
    *,
    images: Iterable[tuple[Any, torch.Tensor, int]] | None = None,
    candidates: tuple[torch.Tensor, torch.Tensor] | None = None,
    itm_score: ItmScore = "logit",
    add_itc: bool = False,
    ks: tuple[int, ...] = (1, 5, 10),
    batch_size: int = 64,
    fusion_batch_size: int = 256,
    chunk_size: int = 1024,
    max_full_pairs: int = 250_000,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Retrieval metrics of a split in one call; images and captions are encoded once.

    Keys: ITC metrics unprefixed (``i2t_r1`` ... ``rsum``, ``i2t_medr``..., as `evaluate_gallery`) when
    the model has a contrastive head; ITM metrics prefixed ``itm_`` when it has an ITM head:
    * ``k_test`` = k: ITM re-ranks each query's top k -- the ITC top k, or ``candidates`` = (i2t [Ni, k]
      caption rows, t2i [Nt, k] image rows) given from elsewhere (models without ITC; rows are gallery
      positions, so every image must be readable);
    * ``k_test`` = None: ITM scores every pair (the exact reference; refused above ``max_full_pairs``
      pairs, since it costs one fusion pass per pair).
    ``images`` replaces the pixel loader (region-feature models pass their region loader).
    """
    loader = images if images is not None else pixel_loader(records, image_size, batch_size)
    captions = {r.image_id: r.captions for r in records}
    features = encode_gallery(model, loader, captions, tokenizer, max_length, device=device, text_batch_size=batch_size)
    owners = features.text_to_image
    has_itc = features.image_embeds is not None and features.text_embeds is not None
    itc: RetrievalRanks | None = None
    itm: dict[str, float] | None = None
    if features.image_for_fusion is not None:
        if candidates is not None:
            if features.skipped_images:
                raise ValueError(f"candidates index gallery rows, but {features.skipped_images} images could not be read")
            i2t, t2i = rerank_candidates(model, features, candidates[0], candidates[1], fusion_batch_size, itm_score)
            itm = retrieval_metrics_from_candidates(i2t, t2i, owners, features.num_images, ks)
        elif k_test is not None and has_itc:
            result = itm_rerank(model, features, k_test, itm_score, add_itc, fusion_batch_size, chunk_size)
            itc, itm = result.itc, metrics_from_ranks(result.ranks, ks)
        elif k_test is not None:
            raise ValueError("k_test re-ranks ITC candidates, but this model has no contrastive head: pass candidates, or k_test=None to score every pair")
        else:
            pairs = features.num_images * features.num_texts
            if pairs > max_full_pairs:
                raise ValueError(f"scoring all {features.num_images} x {features.num_texts} pairs with ITM exceeds max_full_pairs={max_full_pairs}: set k_test")
            scores = itm_score_matrix(model, features, fusion_batch_size, itm_score)
            if add_itc and features.image_embeds is not None and features.text_embeds is not None:
                scores = scores + features.image_embeds @ features.text_embeds.t()
            itm = retrieval_metrics_from_scores(scores, owners, ks=ks)
    metrics: dict[str, float] = {}
    if has_itc:
        if itc is None:
            itc = retrieval_ranks(features.image_embeds, features.text_embeds, owners, chunk_size)  # type: ignore[arg-type]
        metrics.update(metrics_from_ranks(itc, ks))
    if itm is not None:
        metrics.update({f"itm_{key}": value for key, value in itm.items()})
        if k_test is not None:
            metrics["k_test"] = float(k_test)
    metrics["images"] = float(features.num_images)
    metrics["captions"] = float(features.num_texts)
    metrics["skipped_images"] = float(features.skipped_images)
    return metrics
