"""Text encoders: padding independence, causal pooling, the Hugging Face adapter's edges."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from vlp.encoders import HFTextConfig, TextTransformerConfig, build_text_encoder
from vlp.encoders.base import last_token


def tiny_bert(**kw) -> TextTransformerConfig:
    return TextTransformerConfig(**{"vocab_size": 50, "max_length": 16, "width": 32, "depth": 2, "num_heads": 2, **kw})


def padded_pair() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The same texts twice, differing only in what the padding positions hold."""
    ids = torch.randint(5, 50, (3, 8))
    mask = torch.ones(3, 8, dtype=torch.long)
    mask[0, 5:] = 0
    mask[2, 2:] = 0
    other = torch.where(mask.bool(), ids, torch.randint(5, 50, ids.shape))
    return ids, other, mask


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=16, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    path = tmp_path_factory.mktemp("hf_text")
    transformers.BertModel(config).save_pretrained(path)
    return path


def _check_padding_independence(encoder: torch.nn.Module) -> None:
    ids, other, mask = padded_pair()
    encoder.eval()
    a, b = encoder(ids, mask), encoder(other, mask)
    real = mask.bool()
    torch.testing.assert_close(a.tokens[real], b.tokens[real])
    torch.testing.assert_close(a.pooled, b.pooled)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("pool", ["auto", "mean"])
def test_bert_real_positions_ignore_padding(causal: bool, pool: str) -> None:
    _check_padding_independence(build_text_encoder(tiny_bert(causal=causal, pool=pool)))


def test_hf_real_positions_ignore_padding(hf_dir: Path) -> None:
    _check_padding_independence(build_text_encoder(HFTextConfig(path=str(hf_dir), max_length=16)))


def test_causal_pools_the_last_real_token_not_cls() -> None:
    encoder = build_text_encoder(tiny_bert(causal=True)).eval()
    ids, _, mask = padded_pair()
    out = encoder(ids, mask)
    lengths = mask.sum(1)
    torch.testing.assert_close(out.pooled, out.tokens[torch.arange(3), lengths - 1])
    changed = ids.clone()
    changed[0, lengths[0] - 1] = 4  # the last real token: it alone sees the whole text
    assert not torch.allclose(encoder(changed, mask).pooled[0], out.pooled[0])
    bidirectional = build_text_encoder(tiny_bert()).eval()
    bi = bidirectional(ids, mask)
    torch.testing.assert_close(bi.pooled, bi.tokens[:, 0])
    with pytest.raises(ValueError, match="causal"):
        tiny_bert(causal=True, pool="cls")


def test_last_token_handles_left_padding() -> None:
    tokens = torch.arange(2 * 4, dtype=torch.float).reshape(2, 4, 1)
    mask = torch.tensor([[0, 1, 1, 0], [0, 0, 0, 0]])
    assert last_token(tokens, mask)[:, 0].tolist() == [2.0, 4.0]


def test_bert_lock_keeps_last_block_trainable() -> None:
    encoder = build_text_encoder(tiny_bert(depth=3))
    encoder.lock(unlocked_groups=1)
    assert {n.split(".")[2] for n, p in encoder.named_parameters() if p.requires_grad} == {"2"}


def test_hf_adapter_pools_and_checks(hf_dir: Path) -> None:
    transformers = pytest.importorskip("transformers")
    reference = transformers.AutoModel.from_pretrained(str(hf_dir), local_files_only=True).eval()
    ids, _, mask = padded_pair()
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=mask)
    pooler = build_text_encoder(HFTextConfig(path=str(hf_dir), max_length=16, pool="pooler")).eval()
    out = pooler(ids, mask)
    torch.testing.assert_close(out.tokens, expected.last_hidden_state)
    torch.testing.assert_close(out.pooled, expected.pooler_output)
    cls = build_text_encoder(HFTextConfig(path=str(hf_dir), max_length=16))
    assert cls.model.pooler is None and cls.width == 32  # unused pooler removed: no gradient-less parameters
    cls.set_grad_checkpointing(True)
    model = cls.model
    assert getattr(model, "is_activation_checkpointing", None) or model.__dict__.get("is_gradient_checkpointing") or any(
        getattr(m, "gradient_checkpointing", False) for m in model.modules()
    )
    with pytest.raises(ValueError, match="max_position_embeddings"):
        build_text_encoder(HFTextConfig(path=str(hf_dir), max_length=64))
    with pytest.raises(ValueError, match="tokenizer"):
        build_text_encoder(HFTextConfig(path=str(hf_dir), max_length=16, vocab_size=51))
    with pytest.raises(FileNotFoundError, match="config.json"):
        build_text_encoder(HFTextConfig(path=str(hf_dir / "missing")))
    with pytest.raises(ValueError, match="path"):
        HFTextConfig()


def test_hf_without_transformers_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` raise ImportError
    with pytest.raises(ImportError, match="pip install transformers"):
        build_text_encoder(HFTextConfig(path=str(tmp_path)))


def test_causal_text_real_positions_do_not_depend_on_the_padding_mask_shortcut() -> None:
    """Right-padded causal text takes the causal-only mask; real positions must equal what the full
    padding & causal mask gives, and left padding must still be masked."""
    from vlp.encoders.text.transformer import TextTransformer, TextTransformerConfig
    from vlp.layers import causal_mask, combine, padding_mask

    torch.manual_seed(0)
    enc = TextTransformer(TextTransformerConfig(vocab_size=50, max_length=8, width=16, depth=2, num_heads=2, causal=True, norm_first=True)).eval()
    ids = torch.randint(1, 50, (3, 8))
    right = torch.tensor([[1] * 8, [1] * 5 + [0] * 3, [1] * 2 + [0] * 6])
    out = enc(ids, right)
    full = combine(padding_mask(right), causal_mask(8))
    reference = enc.final_norm(enc.blocks(enc.embeddings(ids), attn_mask=full))
    real = right.bool()
    torch.testing.assert_close(out.tokens[real], reference[real], rtol=0, atol=0)
    left = right.flip(1)
    changed = ids.clone()
    changed[left == 0] = 7  # pad content must not reach real tokens
    torch.testing.assert_close(enc(ids, left).tokens[left.bool()], enc(changed, left).tokens[left.bool()])
