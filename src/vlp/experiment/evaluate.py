"""Retrieval evaluation of a trained model on a split: embed the gallery, compute recall@K."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from vlp.data.datasets import ImageCollator, ImageDataset
from vlp.data.images import ImageTransform
from vlp.data.records import ImageRecord
from vlp.data.tokenizer import TextTokenizer
from vlp.metrics import retrieval_recall
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
    model.eval()
    loader = DataLoader(
        ImageDataset(records, ImageTransform(image_size)),
        batch_size=batch_size,
        collate_fn=ImageCollator(),
        num_workers=num_workers,
    )
    index_of = {record.image_id: i for i, record in enumerate(records)}
    kept_rows: list[int] = []
    image_chunks: list[torch.Tensor] = []
    skipped = 0
    for pixels, image_ids, batch_skipped in loader:
        skipped += batch_skipped
        if len(image_ids) == 0:
            continue
        image_chunks.append(model.encode_image(pixels.to(device)).float().cpu())
        kept_rows.extend(index_of[int(i)] for i in image_ids)
    kept = [records[i] for i in kept_rows]
    captions: list[str] = []
    owners: list[int] = []
    for row, record in enumerate(kept):
        captions.extend(record.captions)
        owners.extend([row] * len(record.captions))
    text_chunks = []
    for start in range(0, len(captions), batch_size):
        ids, mask = tokenizer.encode_batch(captions[start : start + batch_size], max_length)
        text_chunks.append(model.encode_text(ids.to(device), mask.to(device)).float().cpu())
    return Gallery(
        records=kept,
        captions=captions,
        text_to_image=torch.tensor(owners, dtype=torch.long),
        image_embeds=torch.cat(image_chunks) if image_chunks else torch.empty(0),
        text_embeds=torch.cat(text_chunks) if text_chunks else torch.empty(0),
        skipped_images=skipped,
    )


def evaluate_gallery(gallery: Gallery, ks: tuple[int, ...] = (1, 5, 10), chunk_size: int = 1024) -> dict[str, float]:
    if not gallery.records:
        raise ValueError("no readable image in the evaluation split")
    metrics = retrieval_recall(gallery.image_embeds, gallery.text_embeds, gallery.text_to_image, ks=ks, chunk_size=chunk_size)
    metrics["images"] = float(len(gallery.records))
    metrics["captions"] = float(len(gallery.captions))
    return metrics
