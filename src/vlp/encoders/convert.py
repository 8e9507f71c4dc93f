"""Weight conversion from the reference implementations to our modules, kept apart from the models.

Users load real ViT (timm) and BERT (Hugging Face) weights through these functions; the parity
tests in tests/parity/ prove that the converted weights give the reference outputs. Conversions are
strict: a key that has no place in our module is an error, never silently dropped, so an
unsupported variant (layer scale, register tokens, relative positions) cannot load half-way.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from vlp.encoders.text.transformer import TextTransformerConfig

__all__ = ["bert_config_from_hf", "bert_state_dict_from_hf", "load_state_dict_file", "vit_state_dict_from_timm"]

StateDict = dict[str, torch.Tensor]


def load_state_dict_file(path: str | os.PathLike[str]) -> StateDict:
    """Tensors of a local ``.safetensors`` or ``torch.save`` file (``weights_only``: no pickled code runs).

    Checkpoints that wrap the weights (``{"state_dict": ...}`` or ``{"model": ...}``) are unwrapped.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"weights file not found: {file} (vlp never downloads weights)")
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(file))
    data: Any = torch.load(file, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(data, Mapping) and isinstance(data.get(key), Mapping):
            data = data[key]
    if not isinstance(data, Mapping):
        raise ValueError(f"{file}: expected a mapping of tensors, got {type(data).__name__}")
    return dict(data)


def _unexpected(keys: list[str], source: str) -> None:
    if keys:
        raise ValueError(f"{source} weights have keys with no counterpart in vlp: {', '.join(sorted(keys)[:10])}")


def vit_state_dict_from_timm(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """timm ``VisionTransformer`` weights -> our ``VisionTransformer`` (class token, no register tokens).

    The names already match except that our blocks live in ``blocks.blocks.N`` (a `Transformer`
    holding the list); CLIP-style ViTs add ``norm_pre`` (`ViTConfig.pre_norm`). The classifier
    (``head``) and an identity ``fc_norm`` are dropped; anything
    else unknown (``reg_token``, layer-scale ``ls1.gamma``, ``attn_pool``) is an error.
    """
    out: StateDict = {}
    unexpected: list[str] = []
    for key, value in state_dict.items():
        if key.startswith(("head.", "head_drop.")):
            continue
        block = re.match(r"blocks\.(\d+)\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)$", key)
        if block:
            out[f"blocks.{key}"] = value
        elif key in {"cls_token", "pos_embed", "norm.weight", "norm.bias", "norm_pre.weight", "norm_pre.bias"} or key.startswith("patch_embed.proj."):
            out[key] = value
        else:
            unexpected.append(key)
    _unexpected(unexpected, "timm ViT")
    return out


_BERT_LAYER = {
    "attention.output.dense": "attn.proj",
    "attention.output.LayerNorm": "norm1",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
    "output.LayerNorm": "norm2",
}


def bert_state_dict_from_hf(state_dict: Mapping[str, torch.Tensor], prefix: str = "bert.") -> StateDict:
    """Hugging Face ``BertModel`` weights (BERT, MiniLM; also ``bert.``-prefixed task checkpoints) -> ours.

    RoBERTa has BERT's layout under ``prefix="roberta."`` (its position offset is a config option).

    Our attention has one fused qkv projection, so its weight is the concatenation of HF's query,
    key and value weights along the output dimension (same for the biases). HF's ``pooler`` (a
    tanh layer trained for NSP) and task heads (``cls.*``) are dropped: our pooled output is the
    [CLS] state itself, and the heads of vlp are built separately.
    """
    prefixed = any(k.startswith(prefix) for k in state_dict)
    out: StateDict = {}
    qkv: dict[str, dict[str, dict[str, torch.Tensor]]] = {}
    unexpected: list[str] = []
    for raw_key, value in state_dict.items():
        if prefixed:
            if not raw_key.startswith(prefix):
                continue  # task heads of BertFor* models (cls.predictions, classifier, ...)
            raw_key = raw_key[len(prefix) :]
        key = raw_key
        if key.startswith("pooler.") or key in ("embeddings.position_ids", "embeddings.token_type_ids"):
            continue
        emb = re.match(r"embeddings\.(word_embeddings|position_embeddings|token_type_embeddings)\.weight$", key)
        layer = re.match(r"encoder\.layer\.(\d+)\.(.+)\.(weight|bias)$", key)
        if emb:
            out[key] = value
        elif key in ("embeddings.LayerNorm.weight", "embeddings.LayerNorm.bias"):
            out[key.replace("LayerNorm", "norm")] = value
        elif layer and layer.group(2) in ("attention.self.query", "attention.self.key", "attention.self.value"):
            qkv.setdefault(layer.group(1), {}).setdefault(layer.group(3), {})[layer.group(2).rsplit(".", 1)[1]] = value
        elif layer and layer.group(2) in _BERT_LAYER:
            out[f"blocks.blocks.{layer.group(1)}.{_BERT_LAYER[layer.group(2)]}.{layer.group(3)}"] = value
        else:
            unexpected.append(raw_key)
    _unexpected(unexpected, "Hugging Face BERT")
    for index, params in qkv.items():
        for kind, parts in params.items():
            if set(parts) != {"query", "key", "value"}:
                raise ValueError(f"layer {index}: incomplete attention {kind} (have {sorted(parts)})")
            out[f"blocks.blocks.{index}.attn.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]], 0)
    return out


def bert_config_from_hf(config: Mapping[str, Any] | Any, **overrides: Any) -> TextTransformerConfig:
    """Our `TextTransformerConfig` for a Hugging Face ``BertConfig`` (object or ``config.json`` dict).

    Only what BERT-style checkpoints vary is read; an activation other than exact GELU or a
    non-absolute position embedding cannot be represented and is an error.
    """
    get = config.get if isinstance(config, Mapping) else lambda k, d=None: getattr(config, k, d)
    if get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"hidden_act {get('hidden_act')!r} is not supported (our MLP uses exact GELU)")
    if get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"position_embedding_type {get('position_embedding_type')!r} is not supported")
    width, intermediate = int(get("hidden_size")), int(get("intermediate_size"))
    fields: dict[str, Any] = dict(
        vocab_size=int(get("vocab_size")),
        max_length=int(get("max_position_embeddings")),
        width=width,
        depth=int(get("num_hidden_layers")),
        num_heads=int(get("num_attention_heads")),
        mlp_ratio=intermediate / width,
        type_vocab_size=int(get("type_vocab_size", 2)),
        norm_first=False,
        eps=float(get("layer_norm_eps", 1e-12)),
        dropout=float(get("hidden_dropout_prob", 0.1)),
    )
    fields.update(overrides)
    cfg = TextTransformerConfig(**fields)
    if int(cfg.width * cfg.mlp_ratio) != intermediate:
        raise ValueError(f"intermediate_size {intermediate} is not width * mlp_ratio for width {width}")
    return cfg
