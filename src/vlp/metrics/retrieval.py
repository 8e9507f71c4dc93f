"""Recall@K for image<->text retrieval with several captions per image (COCO / Karpathy protocol).

image->text: an image query hits at K if ANY of its captions ranks in the top K.
text->image: a caption query hits at K if its image ranks in the top K.

Similarities are computed chunk by chunk, so a 5,000 x 25,000 gallery never materialises the full
score matrix (500 MB in float32) and each chunk only keeps one rank per query. Ties count against
the query (a negative with an equal score ranks first): a collapsed model scores 0, never 100.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def _ranks_text_to_image(image_embeds: torch.Tensor, text_embeds: torch.Tensor, text_to_image: torch.Tensor, chunk: int) -> torch.Tensor:
    ranks = []
    for start in range(0, text_embeds.shape[0], chunk):
        scores = text_embeds[start : start + chunk] @ image_embeds.t()  # [c, Ni]
        target = text_to_image[start : start + chunk]
        positive = scores.gather(1, target[:, None])
        negatives_ahead = (scores >= positive).sum(dim=1) - 1  # minus the positive itself
        ranks.append(negatives_ahead)
    return torch.cat(ranks)


def _ranks_image_to_text(image_embeds: torch.Tensor, text_embeds: torch.Tensor, text_to_image: torch.Tensor, chunk: int) -> torch.Tensor:
    ranks = []
    for start in range(0, image_embeds.shape[0], chunk):
        scores = image_embeds[start : start + chunk] @ text_embeds.t()  # [c, Nt]
        rows = torch.arange(start, start + scores.shape[0], device=scores.device)
        is_positive = text_to_image[None, :] == rows[:, None]
        best_positive = scores.masked_fill(~is_positive, float("-inf")).max(dim=1, keepdim=True).values
        ahead = ((scores >= best_positive) & ~is_positive).sum(dim=1)
        ranks.append(ahead)
    return torch.cat(ranks)


@torch.no_grad()
def retrieval_recall(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    text_to_image: torch.Tensor,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = 1024,
) -> dict[str, float]:
    """Recall@K in percent for both directions, plus their mean ("rsum / 6" style `r_mean`).

    image_embeds [Ni, E], text_embeds [Nt, E] (normalised for cosine similarity); text_to_image [Nt]
    gives, for each caption, the row of its image. Every image needs at least one caption.
    """
    if text_to_image.shape[0] != text_embeds.shape[0]:
        raise ValueError("text_to_image must have one entry per caption")
    counts = torch.bincount(text_to_image, minlength=image_embeds.shape[0])
    if counts.shape[0] != image_embeds.shape[0] or bool((counts == 0).any()):
        raise ValueError("every image needs at least one caption and every caption a valid image index")
    text_to_image = text_to_image.to(image_embeds.device)
    i2t = _ranks_image_to_text(image_embeds, text_embeds, text_to_image, chunk_size)
    t2i = _ranks_text_to_image(image_embeds, text_embeds, text_to_image, chunk_size)
    result: dict[str, float] = {}
    for k in ks:
        result[f"i2t_r{k}"] = 100.0 * (i2t < k).float().mean().item()
    for k in ks:
        result[f"t2i_r{k}"] = 100.0 * (t2i < k).float().mean().item()
    result["r_mean"] = sum(result.values()) / len(result)
    return result


def top_k_texts(image_embeds: torch.Tensor, text_embeds: torch.Tensor, k: int = 5) -> torch.Tensor:
    """Indices [Ni, k] of the k best captions per image (for report examples; fits small galleries)."""
    return (image_embeds @ text_embeds.t()).topk(k, dim=1).indices
