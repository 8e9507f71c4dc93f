"""Hugging Face BERT-family text models (BERT, RoBERTa, MiniLM) -> our `TextTransformer` + tokenizer.

Our BERT-style encoder is the same network, so import is a key mapping (`vlp.encoders.convert`)
plus config options: RoBERTa's positions start at ``pad_token_id + 1`` (`position_offset`) and its
table holds that many extra rows. sentence-transformers directories (all-MiniLM-L6-v2) say in
``1_Pooling/config.json`` how they pool; that choice is kept (``mean`` for MiniLM).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from vlp.data.tokenizer import TextTokenizer
from vlp.encoders.convert import bert_config_from_hf, bert_state_dict_from_hf
from vlp.encoders.text.transformer import TextTransformer, TextTransformerConfig
from vlp.pretrained.common import PretrainedError, load_converted, load_weights, read_json
from vlp.pretrained.tokenizers import bert_tokenizer, roberta_tokenizer

__all__ = ["load_hf_text", "load_text_weights", "text_config_from_hf"]

_MODEL_TYPES = ("bert", "roberta")


def _pooling(root: Path) -> str | None:
    """The sentence-transformers pooling of a model directory, if it declares one."""
    file = root / "1_Pooling" / "config.json"
    if not file.is_file():
        return None
    modes = read_json(file)
    if modes.get("pooling_mode_mean_tokens"):
        return "mean"
    if modes.get("pooling_mode_cls_token"):
        return "cls"
    raise PretrainedError(f"{file}: only mean or [CLS] pooling is supported, got {modes}")


def text_config_from_hf(config: dict[str, Any], **overrides: Any) -> TextTransformerConfig:
    """`TextTransformerConfig` for a BERT or RoBERTa ``config.json`` dict."""
    model_type = config.get("model_type", "bert")
    if model_type not in _MODEL_TYPES:
        raise PretrainedError(f"model_type {model_type!r} is not supported (vlp imports {', '.join(_MODEL_TYPES)})")
    if model_type == "roberta":
        offset = int(config.get("pad_token_id", 1)) + 1
        overrides = {"position_offset": offset, "max_length": int(config["max_position_embeddings"]) - offset, **overrides}
    try:
        return bert_config_from_hf(config, **overrides)
    except ValueError as err:
        raise PretrainedError(f"Hugging Face {model_type}: {err}") from err


def load_hf_text(
    path: str | os.PathLike[str], pool: str | None = None, dropout: float = 0.0
) -> tuple[TextTransformer, TextTokenizer | None]:
    """A BertModel / RobertaModel directory (also ``*ForMaskedLM`` and sentence-transformers layouts)
    -> (our text encoder in eval mode, its tokenizer or None when the directory has no vocabulary).

    `pool` overrides the pooling (default: the sentence-transformers declaration, else [CLS]).
    """
    root = Path(path)
    config = read_json(root / "config.json")
    pool = pool or _pooling(root) or "cls"
    cfg = text_config_from_hf(config, pool=pool, dropout=dropout)
    model_type = config.get("model_type", "bert")
    model = load_text_weights(TextTransformer(cfg), root, model_type)
    tokenizer: TextTokenizer | None = None
    if model_type == "bert" and (root / "vocab.txt").is_file():
        tokenizer = bert_tokenizer(root)
    elif model_type == "roberta" and (root / "merges.txt").is_file():
        tokenizer = roberta_tokenizer(root)
    return model.eval(), tokenizer


def load_text_weights(model: TextTransformer, path: str | os.PathLike[str], model_type: str | None = None) -> TextTransformer:
    """Copy a BERT/RoBERTa directory's weights into an existing `TextTransformer` (strict, in place)."""
    root = Path(path)
    model_type = model_type or read_json(root / "config.json").get("model_type", "bert")
    try:
        state_dict = bert_state_dict_from_hf(load_weights(root), prefix=f"{model_type}.")
    except ValueError as err:
        raise PretrainedError(str(err)) from err
    load_converted(model, state_dict, f"Hugging Face {model_type} ({root})")
    return model
