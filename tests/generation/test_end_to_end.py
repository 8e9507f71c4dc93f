"""Generation on a trained model, with a real tokenizer: a GIT and a BLIP model that memorised one
caption per image (LM loss, a few dozen Adam steps) must decode exactly those captions."""

from __future__ import annotations

import pytest
import torch

from vlp.data.tokenizer import TextTokenizer
from vlp.generation import GenerationConfig, generate
from vlp.models.image_text import build_model
from vlp.models.presets import model_preset
from vlp.objectives.lm import lm_loss

CAPTIONS = ["a red circle left of a blue square", "two green triangles", "a small yellow star above a square"]


@pytest.fixture(scope="module")
def tokenizer() -> TextTokenizer:
    return TextTokenizer.train_wordpiece(CAPTIONS * 4, vocab_size=200)  # whole words: ~10 tokens a caption


def test_config_takes_caption_ids_from_the_tokenizer(tokenizer) -> None:
    cfg = GenerationConfig.for_tokenizer(tokenizer, strategy="beam", num_beams=2)
    ids = tokenizer.encode_batch(CAPTIONS[:1], max_length=16)[0][0].tolist()  # [CLS] ... [SEP]
    assert (cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id) == (ids[0], ids[-1], tokenizer.pad_id)
    assert cfg.num_beams == 2


@pytest.mark.parametrize("family", ["git", "blip"])
def test_memorised_captions_are_decoded(tokenizer, family) -> None:
    torch.manual_seed(0)
    cfg = model_preset(f"{family}_tiny")
    cfg.text_encoder.vocab_size = tokenizer.vocab_size
    model = build_model(cfg)
    pixels = torch.randn(len(CAPTIONS), 3, 32, 32)
    ids, mask = tokenizer.encode_batch(CAPTIONS, max_length=16)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(80):
        loss = lm_loss(model.lm_logits(model.decode(model.image_for_fusion(pixels), ids, mask)), ids, mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    for strategy, beams in (("greedy", 1), ("beam", 3)):
        for use_cache in (True, False):
            gen_cfg = GenerationConfig.for_tokenizer(tokenizer, max_new_tokens=15, strategy=strategy, num_beams=beams, use_cache=use_cache)
            out = generate(model, pixels, gen_cfg)
            assert [tokenizer.decode(row) for row in out.sequences] == CAPTIONS, (strategy, use_cache, float(loss.detach()))
