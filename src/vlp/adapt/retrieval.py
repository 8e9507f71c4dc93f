"""Image-text retrieval with ITM re-ranking: the ALBEF / BLIP `k_test` protocol.

Scoring every (image, caption) pair with the fusion encoder costs Ni x Nt fusion passes (COCO 5k
test: 5,000 x 25,000 = 125 M). ALBEF instead

1. encodes every image and every caption ONCE with the unimodal encoders and caches what the
   fusion reads (image tokens [Ni, N, D], text features [Nt, L, D]) and the ITC embeddings;
2. ranks with ITC similarities and keeps each query's top k in both directions;
3. scores only those pairs with the ITM head, fusing the cached features in batches of pairs
   (pairs are sorted image-major, so one call holds many captions of each image, whose
   cross-attention keys/values are projected once; only the pooled state the head reads is
   computed; a pair asked for by both directions is fused once);
4. orders each query's list by the ITM score. Everything outside the list stays below it (in ITC
   order, `vlp.metrics.retrieval.candidate_ranks`): re-ranking only permutes the top k.

Final scores (a documented choice, not one protocol): ``itm_score="logit"`` ranks by the ITM head's
"match" logit as ALBEF and BLIP do, ``"prob"`` by softmax p(match); ``add_itc=True`` adds the ITC
cosine similarity as BLIP does (ALBEF ranks by ITM alone).

Models without a contrastive head (ViLT/UNITER-style single streams) have no ITC ranking of their
own: `rerank_candidates` re-scores a given candidate list (e.g. another model's ITC top k), and
`itm_score_matrix` scores all Ni x Nt pairs, which is the exact reference for small galleries.
Nothing here depends on the architecture's name: the model's `image_pair_features` /
`text_pair_features` say what its fusion reads (embeddings for BLIP's shared stack and for unified
VLMo/UFO models, encoder outputs otherwise), and images come from any loader of
``(image input, image_ids, skipped)`` batches -- pixels or region features.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

from vlp.data.tokenizer import TextTokenizer
from vlp.encoders import EncoderOutput
from vlp.metrics.retrieval import Candidates, RetrievalRanks, candidate_ranks, retrieval_ranks
from vlp.models import ImageTextModel

ItmScore = Literal["logit", "prob"]


@dataclass
class GalleryFeatures:
    """Unimodal features of an evaluation split, computed once and reused by every scoring pass.

    Row i of the image fields is image ``image_ids[i]``; caption j (``captions[j]``) belongs to image
    row ``text_to_image[j]``. Fusion inputs are None without an ITM head, embeddings None without a
    contrastive head. Features stay on the device they were computed on.
    """

    image_ids: torch.Tensor  # [Ni] long
    captions: list[str]
    text_to_image: torch.Tensor  # [Nt] long
    image_for_fusion: EncoderOutput | None  # [Ni, N, D]
    text_for_fusion: EncoderOutput | None  # [Nt, L, D]
    image_embeds: torch.Tensor | None  # [Ni, E], normalised
    text_embeds: torch.Tensor | None  # [Nt, E], normalised
    skipped_images: int = 0

    @property
    def num_images(self) -> int:
        return int(self.image_ids.shape[0])

    @property
    def num_texts(self) -> int:
        return int(self.text_to_image.shape[0])


@dataclass
class RerankResult:
    """ITC ranks (with their top-k candidates), the ITM-rescored candidate lists, and the final ranks."""

    itc: RetrievalRanks
    i2t: Candidates
    t2i: Candidates
    ranks: RetrievalRanks


def concat_outputs(outputs: Sequence[EncoderOutput]) -> EncoderOutput:
    """Batches stacked into one EncoderOutput. Token counts that differ (region models pad each batch
    to its own largest region count) are right-padded with zeros that the mask hides."""
    longest = max(o.tokens.shape[1] for o in outputs)
    uniform = all(o.tokens.shape[1] == longest for o in outputs)
    if uniform and all(o.mask is None for o in outputs):
        masks = None
    else:
        masks = torch.cat([
            F.pad(o.mask.long() if o.mask is not None else torch.ones(o.tokens.shape[:2], dtype=torch.long, device=o.tokens.device), (0, longest - o.tokens.shape[1]))
            for o in outputs
        ])
    tokens = torch.cat([F.pad(o.tokens, (0, 0, 0, longest - o.tokens.shape[1])) for o in outputs])
    pooled = torch.cat([o.pooled for o in outputs]) if all(o.pooled is not None for o in outputs) else None  # type: ignore[misc]
    return EncoderOutput(tokens=tokens, pooled=pooled, mask=masks)


@torch.no_grad()
def encode_gallery(
    model: ImageTextModel,
    images: Iterable[tuple[Any, torch.Tensor, int]],
    captions_by_image: Mapping[int, Sequence[str]],
    tokenizer: TextTokenizer,
    max_length: int,
    device: torch.device | str = "cpu",
    text_batch_size: int = 256,
    fusion: bool = True,
) -> GalleryFeatures:
    """Encode a split once: ``images`` yields ``(image input, image_ids, skipped)`` batches (pixels
    from `vlp.experiment.foils.pixel_loader`, or region features); ``captions_by_image`` maps each
    image id to its captions. Unreadable images are absent, with their captions. ``fusion=False``
    skips caching the fusion inputs (ITC-only evaluation of a model that also has ITM)."""
    model.eval()
    itc, itm = model.cfg.contrastive, fusion and model.itm_head is not None
    if not (itc or itm):
        raise ValueError("retrieval needs a contrastive (ITC) head or an ITM head (with fusion=True); this model has neither")
    image_ids: list[int] = []
    fusion_in: list[EncoderOutput] = []
    embeds: list[torch.Tensor] = []
    skipped = 0
    for image_input, ids, batch_skipped in images:
        skipped += int(batch_skipped)
        if len(ids) == 0:
            continue
        unimodal, fused_in = model.image_pair_features(image_input.to(device), unimodal=itc)
        if itc:
            embeds.append(model.project_image(unimodal).float())
        if itm:
            fusion_in.append(fused_in)
        image_ids.extend(int(i) for i in ids)
    if not image_ids:
        raise ValueError("no readable image in the retrieval gallery")
    missing = [i for i in image_ids if not captions_by_image.get(i)]
    if missing:
        raise ValueError(f"{len(missing)} gallery images have no caption (first image id {missing[0]})")
    captions = [c for i in image_ids for c in captions_by_image[i]]
    owners = torch.arange(len(image_ids)).repeat_interleave(torch.tensor([len(captions_by_image[i]) for i in image_ids]))
    input_ids, mask = tokenizer.encode_batch(captions, max_length)  # one padded length for all captions
    text_in: list[EncoderOutput] = []
    text_embeds: list[torch.Tensor] = []
    for start in range(0, len(captions), text_batch_size):
        ids_b, mask_b = input_ids[start : start + text_batch_size].to(device), mask[start : start + text_batch_size].to(device)
        unimodal, fused_in = model.text_pair_features(ids_b, mask_b, unimodal=itc)
        if itc:
            text_embeds.append(model.project_text(unimodal).float())
        if itm:
            text_in.append(fused_in)
    return GalleryFeatures(
        image_ids=torch.tensor(image_ids, dtype=torch.long),
        captions=captions,
        text_to_image=owners,
        image_for_fusion=concat_outputs(fusion_in) if itm else None,
        text_for_fusion=concat_outputs(text_in) if itm else None,
        image_embeds=torch.cat(embeds) if itc else None,
        text_embeds=torch.cat(text_embeds) if itc else None,
        skipped_images=skipped,
    )


def _fusion_inputs(model: ImageTextModel, features: GalleryFeatures) -> tuple[EncoderOutput, EncoderOutput]:
    if model.itm_head is None or features.image_for_fusion is None or features.text_for_fusion is None:
        raise ValueError("ITM scoring needs a model with an ITM head (and a gallery encoded by it)")
    return features.image_for_fusion, features.text_for_fusion


def trim_padding(text: EncoderOutput) -> EncoderOutput:
    """``text`` without its trailing columns that are padding in every row.

    A gallery pads every caption to one length; a batch of pairs needs only its longest caption.
    Padded positions are masked keys whose own outputs nothing reads (pooling takes [CLS] or the
    last real token), so dropping them changes no score, only the work."""
    if text.mask is None:
        return text
    real = text.mask.bool().any(dim=0).nonzero()
    length = int(real.max()) + 1 if real.numel() else 1
    if length == text.tokens.shape[1]:
        return text
    return EncoderOutput(tokens=text.tokens[:, :length], pooled=text.pooled, mask=text.mask[:, :length])


@torch.no_grad()
def itm_pair_scores(
    model: ImageTextModel,
    features: GalleryFeatures,
    image_index: torch.Tensor,
    text_index: torch.Tensor,
    batch_size: int = 256,
    itm_score: ItmScore = "logit",
) -> torch.Tensor:
    """ITM score [P] of the pairs (image row ``image_index[p]``, caption ``text_index[p]``), fused
    ``batch_size`` pairs per call from the cached features.

    Pairs are taken in image order, so a batch holds few distinct images (re-ranking asks for
    many captions per image); each batch carries every distinct image once (`ImageTextModel.pool`
    projects its keys/values once, not once per pair), only its longest caption's columns, and
    computes only the pooled state the ITM head reads. Scores equal `fuse` + `itm_logits` per pair."""
    if itm_score not in ("logit", "prob"):
        raise ValueError(f"itm_score must be 'logit' or 'prob', got {itm_score!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if image_index.shape != text_index.shape or image_index.ndim != 1:
        raise ValueError(f"image_index and text_index must be two [P] tensors, got {tuple(image_index.shape)} and {tuple(text_index.shape)}")
    image_in, text_in = _fusion_inputs(model, features)
    device = image_in.tokens.device
    image_index, text_index = image_index.to(device), text_index.to(device)
    order = torch.argsort(image_index, stable=True)
    scores = torch.empty(image_index.shape[0], device=device)
    for start in range(0, image_index.shape[0], batch_size):
        batch = order[start : start + batch_size]
        images, pair_image = torch.unique(image_index[batch], return_inverse=True)
        text = trim_padding(text_in.select(text_index[batch]))
        logits = model.itm_pair_logits(image_in.select(images), text, pair_image).float()
        scores[batch] = logits[:, 1] if itm_score == "logit" else logits.softmax(dim=-1)[:, 1]
    return scores


def itm_score_matrix(model: ImageTextModel, features: GalleryFeatures, batch_size: int = 256, itm_score: ItmScore = "logit") -> torch.Tensor:
    """ITM scores of ALL pairs, [Ni, Nt]: Ni x Nt fusion passes, the exact reference (small galleries)."""
    ni, nt = features.num_images, features.num_texts
    images = torch.arange(ni).repeat_interleave(nt)
    texts = torch.arange(nt).repeat(ni)
    return itm_pair_scores(model, features, images, texts, batch_size, itm_score).view(ni, nt)


def _check_index(index: torch.Tensor, queries: int, gallery: int, name: str) -> None:
    if index.ndim != 2 or index.shape[0] != queries:
        raise ValueError(f"{name} candidates must be [{queries}, k], got {tuple(index.shape)}")
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= gallery):
        raise ValueError(f"{name} candidates hold a row outside [0, {gallery})")


@torch.no_grad()
def rerank_candidates(
    model: ImageTextModel,
    features: GalleryFeatures,
    i2t_index: torch.Tensor,
    t2i_index: torch.Tensor,
    batch_size: int = 256,
    itm_score: ItmScore = "logit",
) -> tuple[Candidates, Candidates]:
    """ITM scores of given candidate lists: ``i2t_index`` [Ni, k] caption rows per image, ``t2i_index``
    [Nt, k'] image rows per caption (from any source: ITC top-k, another model, a file). A pair that
    both directions list is fused once."""
    ni, nt = features.num_images, features.num_texts
    _check_index(i2t_index, ni, nt, "image->text")
    _check_index(t2i_index, nt, ni, "text->image")
    i2t_index, t2i_index = i2t_index.cpu(), t2i_index.cpu()
    keys = torch.cat([
        torch.arange(ni).repeat_interleave(i2t_index.shape[1]) * nt + i2t_index.reshape(-1),
        t2i_index.reshape(-1) * nt + torch.arange(nt).repeat_interleave(t2i_index.shape[1]),
    ])
    pairs, inverse = torch.unique(keys, return_inverse=True)  # sorted: image-major batches
    scores = itm_pair_scores(model, features, pairs // nt, pairs % nt, batch_size, itm_score).cpu()[inverse]
    split = i2t_index.numel()
    return (
        Candidates(i2t_index, scores[:split].view(i2t_index.shape)),
        Candidates(t2i_index, scores[split:].view(t2i_index.shape)),
    )


@torch.no_grad()
def itm_rerank(
    model: ImageTextModel,
    features: GalleryFeatures,
    k_test: int,
    itm_score: ItmScore = "logit",
    add_itc: bool = False,
    batch_size: int = 256,
    chunk_size: int = 1024,
) -> RerankResult:
    """ITC top-``k_test`` per query in both directions (one chunked pass, which also gives the
    ITC-only ranks), re-scored by ITM (+ the ITC cosine when ``add_itc``), then ranked."""
    if k_test < 1:
        raise ValueError(f"k_test must be >= 1, got {k_test}")
    if features.image_embeds is None or features.text_embeds is None:
        raise ValueError(
            "ITC candidates need a contrastive head; for a model without one, re-rank a given candidate "
            "list (rerank_candidates) or score all pairs (itm_score_matrix)"
        )
    itc = retrieval_ranks(features.image_embeds, features.text_embeds, features.text_to_image, chunk_size, top_k=k_test)
    assert itc.i2t_top is not None and itc.t2i_top is not None
    i2t, t2i = rerank_candidates(model, features, itc.i2t_top.index, itc.t2i_top.index, batch_size, itm_score)
    if add_itc:
        i2t = Candidates(i2t.index, i2t.scores + itc.i2t_top.scores.cpu())
        t2i = Candidates(t2i.index, t2i.scores + itc.t2i_top.scores.cpu())
    itc_cpu = RetrievalRanks(itc.i2t.cpu(), itc.t2i.cpu(), itc.i2t_top, itc.t2i_top)
    ranks = candidate_ranks(i2t, t2i, features.text_to_image, features.num_images, fallback=itc_cpu)
    return RerankResult(itc=itc_cpu, i2t=i2t, t2i=t2i, ranks=ranks)


__all__ = [
    "GalleryFeatures",
    "ItmScore",
    "RerankResult",
    "concat_outputs",
    "encode_gallery",
    "itm_pair_scores",
    "itm_rerank",
    "itm_score_matrix",
    "rerank_candidates",
    "trim_padding",
]
