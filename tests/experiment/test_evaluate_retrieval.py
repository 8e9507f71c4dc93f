"""`evaluate_retrieval` on the tiny scenes test split: ITC metrics agree with `evaluate_gallery`, ITM
re-ranking with k_test >= the gallery equals exhaustive ITM scoring, region and single-stream paths."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from vlp.data.images import ImageTransform, load_rgb
from vlp.data.readers import read_karpathy
from vlp.data.tokenizer import TextTokenizer
from vlp.experiment.evaluate import embed_gallery, evaluate_gallery, evaluate_retrieval
from vlp.metrics import retrieval_recall
from vlp.models import build_model, model_preset

ITM_KEYS = ("itm_i2t_r1", "itm_t2i_r5", "itm_rsum", "itm_i2t_medr", "itm_t2i_meanr")


def _setup(family: str, scenes: Path, images: int = 12):
    records = [r for r in read_karpathy(scenes / "dataset_coco.json", splits={"test"})][:images]
    tokenizer = TextTokenizer.train_wordpiece([c for r in records for c in r.captions], vocab_size=120)
    cfg = model_preset(f"{family}_tiny")
    torch.manual_seed(0)
    model = build_model(replace(cfg, text_encoder=replace(cfg.text_encoder, vocab_size=tokenizer.vocab_size))).eval()
    return records, tokenizer, model


def test_albef_itc_and_reranked_metrics(tiny_scenes: Path) -> None:
    records, tokenizer, model = _setup("albef", tiny_scenes)
    reranked = evaluate_retrieval(model, records, tokenizer, 32, 32, k_test=64, batch_size=8, fusion_batch_size=128)
    exhaustive = evaluate_retrieval(model, records, tokenizer, 32, 32, k_test=None, batch_size=5)
    for key in ITM_KEYS:
        assert reranked[key] == pytest.approx(exhaustive[key]), key
    # ITC metrics against embeddings computed here, one image and one caption at a time
    transform = ImageTransform(32)
    with torch.no_grad():
        img = torch.cat([model.encode_image(transform(load_rgb(r.path))[None]) for r in records])
        txt = torch.cat([model.encode_text(*tokenizer.encode_batch([c], 32)) for r in records for c in r.captions])
    owners = torch.arange(len(records)).repeat_interleave(5)
    reference = retrieval_recall(img, txt, owners)
    gallery = evaluate_gallery(embed_gallery(model, records, tokenizer, 32, 32, batch_size=5))
    for key in ("i2t_r1", "i2t_r5", "t2i_r1", "t2i_r10", "rsum", "t2i_medr", "i2t_meanr"):
        assert reranked[key] == pytest.approx(reference[key]), key
        assert gallery[key] == pytest.approx(reference[key]), key
    assert reranked["images"] == 12 and reranked["captions"] == 60 and reranked["k_test"] == 64
    small_k = evaluate_retrieval(model, records, tokenizer, 32, 32, k_test=3)
    # re-ranking only permutes each query's ITC top 3, so every R@K with K >= 3 keeps its ITC value
    for key in ("i2t_r5", "i2t_r10", "t2i_r5", "t2i_r10"):
        assert small_k[f"itm_{key}"] == pytest.approx(small_k[key]), key

def test_single_stream_scores_every_pair_or_given_candidates(tiny_scenes: Path) -> None:
    records, tokenizer, model = _setup("vilt", tiny_scenes, images=6)
    full = evaluate_retrieval(model, records, tokenizer, 32, 32)
    assert "i2t_r1" not in full and set(ITM_KEYS) <= set(full)
    everything = (torch.arange(30).expand(6, 30), torch.arange(6).expand(30, 6))
    given = evaluate_retrieval(model, records, tokenizer, 32, 32, k_test=30, candidates=everything)
    for key in ITM_KEYS:
        assert given[key] == pytest.approx(full[key]), key
    with pytest.raises(ValueError, match="no contrastive head"):
        evaluate_retrieval(model, records, tokenizer, 32, 32, k_test=4)
    with pytest.raises(ValueError, match="max_full_pairs"):
        evaluate_retrieval(model, records, tokenizer, 32, 32, max_full_pairs=10)
