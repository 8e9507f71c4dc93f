"""ITM re-ranking (ALBEF k_test protocol) against full N x N ITM scoring and a naive per-pair reference,
for a cross-attention (ALBEF), a shared-text (BLIP), a unified (VLMo), a single-stream pixel (ViLT)
and a single-stream region (UNITER) model, random init, fixed seed."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from vlp.adapt.retrieval import encode_gallery, itm_pair_scores, itm_rerank, itm_score_matrix, rerank_candidates
from vlp.data.tokenizer import TextTokenizer
from vlp.encoders import RegionInputs
from vlp.metrics.retrieval import retrieval_metrics_from_candidates, retrieval_metrics_from_scores, score_matrix_ranks
from vlp.models import build_model, model_preset

CAPTIONS = {
    10: ("a red circle", "one red shape"),
    11: ("a blue square left of a green star",),
    12: ("two yellow hearts", "there are two hearts", "yellow objects"),
    13: ("a big purple cross", "we can see a cross"),
    14: ("a small cyan hexagon",),
}
IMAGE_IDS = list(CAPTIONS)


@pytest.fixture(scope="module")
def tokenizer() -> TextTokenizer:
    return TextTokenizer.train_wordpiece([c for caps in CAPTIONS.values() for c in caps], vocab_size=80)


def _model(family: str, tokenizer: TextTokenizer):
    cfg = model_preset(f"{family}_tiny")
    torch.manual_seed(0)
    return build_model(replace(cfg, text_encoder=replace(cfg.text_encoder, vocab_size=tokenizer.vocab_size))).eval()


def _images(model, batch: int = 2) -> tuple[list, list]:
    """(loader batches, one input per image). Region inputs get a different region count per image,
    so loader batches pad to different lengths (the gallery cache must re-pad them)."""
    generator = torch.Generator().manual_seed(1)
    n = len(IMAGE_IDS)
    if model.cfg.image_encoder.kind == "region":
        feats = [torch.randn(2 + i, model.cfg.image_encoder.feature_dim, generator=generator) for i in range(n)]
        boxes = [torch.rand(2 + i, 4, generator=generator).sort(dim=-1).values for i in range(n)]
        singles = [RegionInputs.pad([f], [b]) for f, b in zip(feats, boxes)]
        batches = [RegionInputs.pad(feats[s : s + batch], boxes[s : s + batch]) for s in range(0, n, batch)]
    else:
        pixels = torch.randn(n, 3, 32, 32, generator=generator)
        singles = [pixels[i : i + 1] for i in range(n)]
        batches = [pixels[s : s + batch] for s in range(0, n, batch)]
    loader = [(b, torch.tensor(IMAGE_IDS[s : s + batch]), 0) for s, b in zip(range(0, n, batch), batches)]
    return loader, singles


def naive_itm(model, singles: list, tokenizer: TextTokenizer) -> torch.Tensor:
    """[Ni, Nt] match logits, one pair at a time through `pair_features`, each caption tokenised alone."""
    captions = [c for caps in CAPTIONS.values() for c in caps]
    out = torch.zeros(len(singles), len(captions))
    with torch.no_grad():
        for i, image in enumerate(singles):
            for j, caption in enumerate(captions):
                ids, mask = tokenizer.encode_batch([caption], 32)
                feats = model.pair_features(image, ids, mask, unimodal=False)
                out[i, j] = model.itm_logits(model.fuse(feats.image_for_fusion, feats.text_for_fusion, mode="bidirectional"))[0, 1]
    return out


@pytest.mark.parametrize("family", ["albef", "blip", "vlmo", "vilt", "uniter"])
def test_full_itm_matrix_equals_naive_pairs_and_is_batch_invariant(family: str, tokenizer: TextTokenizer) -> None:
    model = _model(family, tokenizer)
    loader, singles = _images(model)
    features = encode_gallery(model, loader, CAPTIONS, tokenizer, 32, text_batch_size=3)
    assert features.num_images == 5 and features.num_texts == 9
    full = itm_score_matrix(model, features, batch_size=64)
    one_at_a_time = itm_score_matrix(model, features, batch_size=1)
    assert torch.allclose(full, one_at_a_time, atol=1e-5)
    assert torch.allclose(full, naive_itm(model, singles, tokenizer), atol=1e-4)
    assert full.std() > 0  # the scores actually depend on the pair


@pytest.mark.parametrize("family", ["albef", "blip", "vlmo"])
def test_rerank_with_k_equal_n_is_full_itm(family: str, tokenizer: TextTokenizer) -> None:
    model = _model(family, tokenizer)
    loader, _ = _images(model)
    features = encode_gallery(model, loader, CAPTIONS, tokenizer, 32)
    full = itm_score_matrix(model, features)
    result = itm_rerank(model, features, k_test=100, batch_size=4)  # k clipped to the gallery sizes
    assert result.i2t.index.shape == (5, 9) and result.t2i.index.shape == (9, 5)
    assert torch.allclose(result.i2t.scores, full.gather(1, result.i2t.index), atol=1e-5)
    assert torch.allclose(result.t2i.scores, full.t().gather(1, result.t2i.index), atol=1e-5)
    want = score_matrix_ranks(full, features.text_to_image)
    assert torch.equal(result.ranks.i2t, want.i2t) and torch.equal(result.ranks.t2i, want.t2i)


def test_partial_rerank_metrics_match_a_dense_reranked_matrix(tokenizer: TextTokenizer) -> None:
    model = _model("albef", tokenizer)
    loader, _ = _images(model)
    features = encode_gallery(model, loader, CAPTIONS, tokenizer, 32)
    full = itm_score_matrix(model, features, itm_score="prob")
    result = itm_rerank(model, features, k_test=2, itm_score="prob", add_itc=True)
    sims = features.image_embeds @ features.text_embeds.t()
    # top-2 by ITC per query moved above the rest (scored prob + cosine); the rest keeps ITC order
    dense_i2t = sims.scatter(1, result.itc.i2t_top.index, (full + sims).gather(1, result.itc.i2t_top.index) + 1e3)
    dense_t2i = sims.t().scatter(1, result.itc.t2i_top.index, (full + sims).t().gather(1, result.itc.t2i_top.index) + 1e3)
    expected = retrieval_metrics_from_scores(dense_i2t, features.text_to_image, dense_t2i)
    got = retrieval_metrics_from_candidates(result.i2t, result.t2i, features.text_to_image, 5, fallback=result.itc)
    assert got == pytest.approx(expected)
    assert torch.equal(result.itc.i2t, score_matrix_ranks(sims, features.text_to_image).i2t)


def test_single_stream_reranks_given_candidates(tokenizer: TextTokenizer) -> None:
    model = _model("vilt", tokenizer)
    loader, _ = _images(model)
    features = encode_gallery(model, loader, CAPTIONS, tokenizer, 32)
    assert features.image_embeds is None
    full = itm_score_matrix(model, features)
    generator = torch.Generator().manual_seed(2)
    i2t_index = torch.stack([torch.randperm(9, generator=generator)[:3] for _ in range(5)])
    t2i_index = torch.stack([torch.randperm(5, generator=generator)[:2] for _ in range(9)])
    i2t, t2i = rerank_candidates(model, features, i2t_index, t2i_index, batch_size=5)
    assert torch.allclose(i2t.scores, full.gather(1, i2t_index), atol=1e-5)
    assert torch.allclose(t2i.scores, full.t().gather(1, t2i_index), atol=1e-5)
    with pytest.raises(ValueError, match="contrastive head"):
        itm_rerank(model, features, k_test=2)
    with pytest.raises(ValueError, match="outside"):
        rerank_candidates(model, features, i2t_index + 9, t2i_index)


def test_dual_encoder_has_no_itm(tokenizer: TextTokenizer) -> None:
    model = _model("clip", tokenizer)
    loader, _ = _images(model)
    features = encode_gallery(model, loader, CAPTIONS, tokenizer, 32)
    assert features.image_for_fusion is None and features.image_embeds is not None
    with pytest.raises(ValueError, match="ITM head"):
        itm_pair_scores(model, features, torch.tensor([0]), torch.tensor([0]))
