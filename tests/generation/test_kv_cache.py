"""KV-cached decoding against full recomputation, for every LM-capable model.

The reference re-runs the model on the whole sequence each step (`DecodingState(use_cache=False)`);
the cached run feeds one token (or a block of tokens) at a time. Both must give the same next-token
log-probabilities at every step (atol 1e-5), for padded prompts, in causal and prefix-LM modes.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vlp.generation import DecodingState, GenerationConfig, generate
from vlp.layers import KVCache, SelfAttention
from vlp.layers.masks import causal_mask

ATOL = 1e-5


def _prompt(lm) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.tensor([[lm.BOS, 5, 6, 7], [lm.BOS, 8, 0, 0], [lm.BOS, 0, 0, 0]])
    return ids, (ids != 0).long()


def _states(model, lm, case, mode):
    inputs = lm.images(case, 3)
    with torch.no_grad():
        image = model.image_for_fusion(inputs)
        ids, mask = _prompt(lm)
        return DecodingState(model, image, ids, mask, mode, use_cache=True), DecodingState(model, image, ids, mask, mode, use_cache=False)


def _assert_steps_match(cached: DecodingState, full: DecodingState, steps: int = 5) -> None:
    torch.testing.assert_close(F.log_softmax(cached.logits, -1), F.log_softmax(full.logits, -1), atol=ATOL, rtol=0)
    logits = cached.logits
    with torch.no_grad():
        for _ in range(steps):
            token = logits.argmax(-1)[:, None]
            logits = cached.advance(token)[:, -1]
            reference = full.advance(token)[:, -1]
            torch.testing.assert_close(F.log_softmax(logits, -1), F.log_softmax(reference, -1), atol=ATOL, rtol=0)
            assert torch.equal(logits.argmax(-1), reference.argmax(-1))
        block = torch.tensor([[9, 10], [11, 12], [13, 14]])  # two tokens in one step
        torch.testing.assert_close(
            F.log_softmax(cached.advance(block), -1), F.log_softmax(full.advance(block), -1), atol=ATOL, rtol=0
        )


def test_cached_steps_match_recomputation_causal(case, lm) -> None:
    model = lm.model(case)
    _assert_steps_match(*_states(model, lm, case, "causal"))


def test_cached_steps_match_recomputation_prefix_lm(seq2seq_case, lm) -> None:
    model = lm.model(seq2seq_case)
    _assert_steps_match(*_states(model, lm, seq2seq_case, "seq2seq"))


def test_generate_cached_equals_uncached(case, lm) -> None:
    model, inputs = lm.model(case), lm.images(case, 4)
    for strategy, beams in (("greedy", 1), ("beam", 3)):
        cfg = GenerationConfig(max_new_tokens=6, strategy=strategy, num_beams=beams, bos_token_id=lm.BOS, eos_token_id=lm.EOS)
        cached = generate(model, inputs, cfg)
        full = generate(model, inputs, GenerationConfig(**{**cfg.__dict__, "use_cache": False}))
        assert torch.equal(cached.sequences, full.sequences)
        torch.testing.assert_close(cached.scores, full.scores, atol=ATOL, rtol=0)


def test_prefill_equals_training_forward(case, lm) -> None:
    """Filling a cache does not change what the prompt pass returns (the training path's output)."""
    model = lm.model(case)
    with torch.no_grad():
        image = model.image_for_fusion(lm.images(case, 3))
        ids, mask = _prompt(lm)
        plain = model.lm_logits(model.decode(image, ids, mask))
        cached = model.lm_logits(model.decode(image, ids, mask, cache=KVCache()))
    torch.testing.assert_close(cached, plain, atol=1e-6, rtol=0)


def test_self_attention_cache_equals_causal_attention() -> None:
    torch.manual_seed(0)
    attn = SelfAttention(16, 2).eval()
    x = torch.randn(2, 5, 16)
    full = attn(x, causal_mask(5))
    cache = KVCache()
    steps = [attn(x[:, i : i + 1], None, cache.layer(0)) for i in range(5)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-6, rtol=0)
    assert cache.layer(0).key is not None and cache.layer(0).key.shape == (2, 2, 5, 8)


def test_models_without_incremental_decoding_say_so(lm) -> None:
    from vlp.models.image_text import build_model
    from vlp.models.presets import model_preset

    cfg = model_preset("albef_tiny")  # an ALBEF fusion run causally has an LM path but no cache
    cfg.text_encoder.vocab_size = lm.VOCAB
    cfg.heads.lm = True
    model = build_model(cfg).eval()
    with pytest.raises(ValueError, match="no incremental decoding"):
        generate(model, lm.images("albef", 2), GenerationConfig(max_new_tokens=2))
    out = generate(model, lm.images("albef", 2), GenerationConfig(max_new_tokens=2, use_cache=False))
    assert out.sequences.shape[0] == 2
