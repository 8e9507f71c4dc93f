"""Image<->text retrieval metrics with several captions per image (COCO / Karpathy protocol).

image->text: an image query hits at K if ANY of its captions ranks in the top K.
text->image: a caption query hits at K if its image ranks in the top K.

Reported, as papers do: R@K in percent both ways, `rsum` (the sum of all recalls; with K = 1, 5, 10
the six numbers of the UNITER/ALBEF tables), `r_mean` (rsum / number of recalls), and the median
and mean rank of the first correct item, 1-based (`*_medr`, `*_meanr`; VSE++ style).

Everything is derived from one integer per query, its rank = how many NON-matching items score at
least as high as the best matching one. Ties count against the query (a negative with an equal
score ranks first): a collapsed model scores 0, never 100. Scores come from one of three sources:

* embeddings (`retrieval_ranks`): similarities are computed chunk by chunk, so a 5,000 x 25,000
  gallery never materialises the full score matrix (500 MB in float32); each chunk keeps one rank
  per query and, on request, its top-k candidates (what ITM re-ranking needs), in the same pass;
* an explicit score matrix (`score_matrix_ranks`), e.g. full N x N ITM scores;
* per-query candidate lists with scores (`candidate_ranks`), e.g. ITM re-ranked ITC top-k. Items
  outside a query's list rank below all of it; if no match is in the list, the query keeps the rank
  of a `fallback` ranking (the one the candidates came from: re-ranking only permutes the top k),
  or, without one, the worst possible rank.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch


@dataclass
class Candidates:
    """Per-query candidate lists: ``index`` [Nq, k] gallery rows, ``scores`` [Nq, k], best first or not."""

    index: torch.Tensor
    scores: torch.Tensor

    def __post_init__(self) -> None:
        if self.index.ndim != 2 or self.index.shape != self.scores.shape:
            raise ValueError(f"candidate index and scores must both be [queries, k], got {tuple(self.index.shape)} and {tuple(self.scores.shape)}")


@dataclass
class RetrievalRanks:
    """0-based ranks (non-matching items ahead of the best match) per image query and per caption query,
    and, when asked for, each query's top-k candidates by the same scores."""

    i2t: torch.Tensor  # [Ni] long
    t2i: torch.Tensor  # [Nt] long
    i2t_top: Candidates | None = None  # [Ni, k] caption rows
    t2i_top: Candidates | None = None  # [Nt, k] image rows


def check_text_to_image(text_to_image: torch.Tensor, num_images: int, num_texts: int) -> None:
    """Every caption names a valid image, and every image has at least one caption."""
    if text_to_image.ndim != 1 or text_to_image.shape[0] != num_texts:
        raise ValueError(f"text_to_image must have one entry per caption ({num_texts}), got shape {tuple(text_to_image.shape)}")
    if num_texts and (int(text_to_image.min()) < 0 or int(text_to_image.max()) >= num_images):
        raise ValueError(f"text_to_image holds an image index outside [0, {num_images})")
    counts = torch.bincount(text_to_image, minlength=num_images)
    if bool((counts == 0).any()):
        raise ValueError("every image needs at least one caption and every caption a valid image index")


def _negatives_ahead(scores: torch.Tensor, is_positive: torch.Tensor) -> torch.Tensor:
    """Per row: negatives scoring >= the best positive (all negatives when the row has no positive)."""
    if bool(torch.isnan(scores).any()):
        raise ValueError("retrieval scores contain NaN")
    best = scores.masked_fill(~is_positive, float("-inf")).max(dim=1, keepdim=True).values
    return ((scores >= best) & ~is_positive).sum(dim=1)


def _chunked(
    score_rows: Callable[[int, int], torch.Tensor],
    num_queries: int,
    positives: Callable[[int, int, torch.Tensor], torch.Tensor],
    chunk: int,
    top_k: int,
) -> tuple[torch.Tensor, Candidates | None]:
    """Ranks (and top-k candidates) of queries [start, end) from score rows produced chunk by chunk."""
    if chunk < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk}")
    ranks, top_index, top_scores = [], [], []
    for start in range(0, num_queries, chunk):
        end = min(start + chunk, num_queries)
        scores = score_rows(start, end)
        ranks.append(_negatives_ahead(scores, positives(start, end, scores)))
        if top_k:
            best = scores.topk(min(top_k, scores.shape[1]), dim=1)
            top_index.append(best.indices)
            top_scores.append(best.values)
    rank = torch.cat(ranks) if ranks else torch.zeros(0, dtype=torch.long)
    return rank, (Candidates(torch.cat(top_index), torch.cat(top_scores)) if top_k and top_index else None)


def _i2t_positives(text_to_image: torch.Tensor) -> Callable[[int, int, torch.Tensor], torch.Tensor]:
    def positives(start: int, end: int, scores: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(start, end, device=scores.device)
        return text_to_image.to(scores.device)[None, :] == rows[:, None]

    return positives


def _t2i_positives(text_to_image: torch.Tensor) -> Callable[[int, int, torch.Tensor], torch.Tensor]:
    def positives(start: int, end: int, scores: torch.Tensor) -> torch.Tensor:
        images = torch.arange(scores.shape[1], device=scores.device)
        return images[None, :] == text_to_image[start:end].to(scores.device)[:, None]

    return positives


@torch.no_grad()
def retrieval_ranks(
    image_embeds: torch.Tensor, text_embeds: torch.Tensor, text_to_image: torch.Tensor, chunk_size: int = 1024, top_k: int = 0
) -> RetrievalRanks:
    """Ranks of dot-product similarities (cosine for normalised embeddings), chunk by chunk; with
    ``top_k`` > 0 also each query's ``top_k`` best gallery items (ITC candidates for ITM re-ranking)."""
    check_text_to_image(text_to_image, image_embeds.shape[0], text_embeds.shape[0])
    text_to_image = text_to_image.to(image_embeds.device)
    i2t, i2t_top = _chunked(
        lambda s, e: image_embeds[s:e] @ text_embeds.t(), image_embeds.shape[0], _i2t_positives(text_to_image), chunk_size, top_k
    )
    t2i, t2i_top = _chunked(
        lambda s, e: text_embeds[s:e] @ image_embeds.t(), text_embeds.shape[0], _t2i_positives(text_to_image), chunk_size, top_k
    )
    return RetrievalRanks(i2t, t2i, i2t_top, t2i_top)


@torch.no_grad()
def score_matrix_ranks(
    i2t_scores: torch.Tensor, text_to_image: torch.Tensor, t2i_scores: torch.Tensor | None = None, chunk_size: int = 1024
) -> RetrievalRanks:
    """Ranks from an explicit score matrix ``i2t_scores`` [Ni, Nt] (e.g. full ITM scores). ``t2i_scores``
    [Nt, Ni] is a separate matrix for the text->image direction (re-ranking scores each direction's own
    candidates); by default the transpose of ``i2t_scores``."""
    num_images, num_texts = i2t_scores.shape
    t2i_scores = i2t_scores.t() if t2i_scores is None else t2i_scores
    if tuple(t2i_scores.shape) != (num_texts, num_images):
        raise ValueError(f"t2i_scores must be [{num_texts}, {num_images}], got {tuple(t2i_scores.shape)}")
    check_text_to_image(text_to_image, num_images, num_texts)
    i2t, _ = _chunked(lambda s, e: i2t_scores[s:e], num_images, _i2t_positives(text_to_image), chunk_size, 0)
    t2i, _ = _chunked(lambda s, e: t2i_scores[s:e], num_texts, _t2i_positives(text_to_image), chunk_size, 0)
    return RetrievalRanks(i2t, t2i)


def _ranks_in_lists(candidates: Candidates, is_positive: torch.Tensor, worst: torch.Tensor, fallback: torch.Tensor | None) -> torch.Tensor:
    found = is_positive.any(dim=1)
    ahead = _negatives_ahead(candidates.scores, is_positive)
    outside = worst if fallback is None else fallback.to(ahead.device)
    return torch.where(found, ahead, outside.to(ahead.device))


@torch.no_grad()
def candidate_ranks(
    i2t: Candidates, t2i: Candidates, text_to_image: torch.Tensor, num_images: int, fallback: RetrievalRanks | None = None
) -> RetrievalRanks:
    """Ranks from per-query candidate lists (``i2t``: caption rows per image, ``t2i``: image rows per
    caption; no duplicates within a list). Everything outside a list ranks below it. A query without
    its match in the list takes its rank from ``fallback`` if given (which must be the ranking the
    lists are the top-k of, so that rank is >= k), else the worst rank (all negatives ahead)."""
    num_texts = text_to_image.shape[0]
    check_text_to_image(text_to_image, num_images, num_texts)
    if i2t.index.shape[0] != num_images or t2i.index.shape[0] != num_texts:
        raise ValueError(f"need one candidate list per image ({num_images}) and per caption ({num_texts})")
    owners = text_to_image.to(i2t.index.device)
    rows = torch.arange(num_images, device=i2t.index.device)
    counts = torch.bincount(owners, minlength=num_images)
    i2t_ranks = _ranks_in_lists(i2t, owners[i2t.index] == rows[:, None], num_texts - counts, None if fallback is None else fallback.i2t)
    target = text_to_image.to(t2i.index.device)
    worst = torch.full((num_texts,), num_images - 1, dtype=torch.long, device=t2i.index.device)
    t2i_ranks = _ranks_in_lists(t2i, t2i.index == target[:, None], worst, None if fallback is None else fallback.t2i)
    return RetrievalRanks(i2t_ranks, t2i_ranks)


def _median(values: torch.Tensor) -> float:
    """numpy's median (mean of the two middle values for an even count), as the papers' scripts use."""
    ordered = values.double().sort().values
    n = ordered.shape[0]
    return float((ordered[(n - 1) // 2] + ordered[n // 2]) / 2)


def metrics_from_ranks(ranks: RetrievalRanks, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """R@K (percent), rsum, r_mean, and 1-based median / mean ranks of both directions."""
    if ranks.i2t.numel() == 0 or ranks.t2i.numel() == 0:
        raise ValueError("retrieval metrics need at least one image and one caption")
    result: dict[str, float] = {}
    for direction, rank in (("i2t", ranks.i2t), ("t2i", ranks.t2i)):
        for k in ks:
            result[f"{direction}_r{k}"] = 100.0 * (rank < k).double().mean().item()
    recalls = list(result.values())
    result["rsum"] = sum(recalls)
    result["r_mean"] = result["rsum"] / len(recalls)
    for direction, rank in (("i2t", ranks.i2t), ("t2i", ranks.t2i)):
        one_based = rank.cpu() + 1
        result[f"{direction}_medr"] = _median(one_based)
        result[f"{direction}_meanr"] = one_based.double().mean().item()
    return result


@torch.no_grad()
def retrieval_recall(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    text_to_image: torch.Tensor,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = 1024,
) -> dict[str, float]:
    """All retrieval metrics of embeddings (see the module docstring) from one chunked pass.

    image_embeds [Ni, E], text_embeds [Nt, E] (normalised for cosine similarity); text_to_image [Nt]
    gives, for each caption, the row of its image. Every image needs at least one caption.
    """
    return metrics_from_ranks(retrieval_ranks(image_embeds, text_embeds, text_to_image, chunk_size), ks)


def retrieval_metrics_from_scores(
    i2t_scores: torch.Tensor, text_to_image: torch.Tensor, t2i_scores: torch.Tensor | None = None, ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """The metrics of `retrieval_recall` from an explicit (possibly re-ranked) score matrix."""
    return metrics_from_ranks(score_matrix_ranks(i2t_scores, text_to_image, t2i_scores), ks)


def retrieval_metrics_from_candidates(
    i2t: Candidates,
    t2i: Candidates,
    text_to_image: torch.Tensor,
    num_images: int,
    ks: Sequence[int] = (1, 5, 10),
    fallback: RetrievalRanks | None = None,
) -> dict[str, float]:
    """The metrics of `retrieval_recall` from per-query candidate lists (see `candidate_ranks`)."""
    return metrics_from_ranks(candidate_ranks(i2t, t2i, text_to_image, num_images, fallback), ks)


def top_k_texts(image_embeds: torch.Tensor, text_embeds: torch.Tensor, k: int = 5) -> torch.Tensor:
    """Indices [Ni, k] of the k best captions per image (for report examples; fits small galleries)."""
    return (image_embeds @ text_embeds.t()).topk(k, dim=1).indices
