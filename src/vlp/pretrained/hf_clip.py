"""Hugging Face ``CLIPModel`` directories -> a vlp CLIP model (`clip_arch`) and CLIP's tokenizer.

Reads ``config.json`` and ``model.safetensors`` (or ``pytorch_model.bin`` with weights_only=True).
Hugging Face keeps separate q/k/v projections and a 1-d class embedding; ours fuses qkv and keeps
timm's ``cls_token``/``pos_embed`` shapes, so those are concatenated/reshaped. Hugging Face pools
the text at the first ``eos_token_id`` (or at the highest id for old configs); ours at the last real
token: the same position for texts that `clip_tokenizer` encodes (EOS last, then padding).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from vlp.data.tokenizer import TextTokenizer
from vlp.encoders.convert import StateDict
from vlp.models import ImageTextModel, ModelConfig, build_model
from vlp.pretrained.clip_arch import activation, clip_model_config
from vlp.pretrained.common import PretrainedError, cat_qkv, load_converted, load_weights, read_json
from vlp.pretrained.tokenizers import clip_tokenizer

__all__ = ["clip_config_from_hf", "clip_state_dict_from_hf", "load_hf_clip"]

_LAYER = {
    "self_attn.out_proj": "attn.proj",
    "layer_norm1": "norm1",
    "layer_norm2": "norm2",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
_DIRECT = {
    "vision_model.embeddings.patch_embedding.weight": "image_encoder.patch_embed.proj.weight",
    "vision_model.pre_layrnorm.weight": "image_encoder.norm_pre.weight",
    "vision_model.pre_layrnorm.bias": "image_encoder.norm_pre.bias",
    "vision_model.post_layernorm.weight": "image_encoder.norm.weight",
    "vision_model.post_layernorm.bias": "image_encoder.norm.bias",
    "text_model.embeddings.token_embedding.weight": "text_encoder.embeddings.word_embeddings.weight",
    "text_model.embeddings.position_embedding.weight": "text_encoder.embeddings.position_embeddings.weight",
    "text_model.final_layer_norm.weight": "text_encoder.final_norm.weight",
    "text_model.final_layer_norm.bias": "text_encoder.final_norm.bias",
    "visual_projection.weight": "image_proj.weight",
    "text_projection.weight": "text_proj.weight",
}


def clip_config_from_hf(config: Mapping[str, Any]) -> ModelConfig:
    """Our `ModelConfig` for a Hugging Face ``CLIPConfig`` dict (its ``config.json``)."""
    vision, text = config.get("vision_config"), config.get("text_config")
    if not isinstance(vision, Mapping) or not isinstance(text, Mapping):
        raise PretrainedError("not a CLIPModel config.json: vision_config / text_config missing")
    acts = {vision.get("hidden_act", "quick_gelu"), text.get("hidden_act", "quick_gelu")}
    eps = {float(vision.get("layer_norm_eps", 1e-5)), float(text.get("layer_norm_eps", 1e-5))}
    if len(acts) != 1 or len(eps) != 1:
        raise PretrainedError(f"Hugging Face CLIP: towers differ in activation {acts} or eps {eps}; vlp expects one of each")
    return clip_model_config(
        image_size=int(vision["image_size"]), patch_size=int(vision["patch_size"]),
        vision_width=int(vision["hidden_size"]), vision_depth=int(vision["num_hidden_layers"]),
        vision_heads=int(vision["num_attention_heads"]), vision_mlp=int(vision["intermediate_size"]),
        vocab_size=int(text["vocab_size"]), context_length=int(text["max_position_embeddings"]),
        text_width=int(text["hidden_size"]), text_depth=int(text["num_hidden_layers"]),
        text_heads=int(text["num_attention_heads"]), text_mlp=int(text["intermediate_size"]),
        embed_dim=int(config.get("projection_dim", 512)), act=activation(acts.pop(), "Hugging Face CLIP"),
        eps=eps.pop(), logit_scale=float(config.get("logit_scale_init_value", math.log(1 / 0.07))),
        source="Hugging Face CLIP",
    )


def clip_state_dict_from_hf(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """Hugging Face ``CLIPModel`` weights -> `ImageTextModel` names (unknown keys are kept, so that
    `load_converted` names them as unexpected)."""
    out: StateDict = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state_dict.items():
        if key.endswith("position_ids"):
            continue  # a buffer of aranges, not a weight
        layer = re.match(r"(vision|text)_model\.encoder\.layers\.(\d+)\.(.+)\.(weight|bias)$", key)
        tower = {"vision": "image_encoder", "text": "text_encoder"}[layer.group(1)] if layer else ""
        if key in _DIRECT:
            out[_DIRECT[key]] = value
        elif key == "logit_scale":
            out["log_logit_scale"] = value.reshape(())
        elif key == "vision_model.embeddings.class_embedding":
            out["image_encoder.cls_token"] = value.reshape(1, 1, -1)
        elif key == "vision_model.embeddings.position_embedding.weight":
            out["image_encoder.pos_embed"] = value[None]
        elif layer and layer.group(3) in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
            target = f"{tower}.blocks.blocks.{layer.group(2)}.attn.qkv.{layer.group(4)}"
            qkv.setdefault(target, {})[layer.group(3)[len("self_attn.")]] = value
        elif layer and layer.group(3) in _LAYER:
            out[f"{tower}.blocks.blocks.{layer.group(2)}.{_LAYER[layer.group(3)]}.{layer.group(4)}"] = value
        else:
            out[key] = value
    for target, parts in qkv.items():
        out[target] = cat_qkv(parts, target)
    return out


def load_hf_clip(path: str | os.PathLike[str]) -> tuple[ImageTextModel, TextTokenizer | None]:
    """A ``CLIPModel.save_pretrained`` directory -> (vlp model in eval mode, tokenizer or None).

    The tokenizer is built when the directory has CLIP's ``vocab.json`` + ``merges.txt``.
    """
    root = Path(path)
    cfg = clip_config_from_hf(read_json(root / "config.json"))
    model = build_model(cfg)
    load_converted(model, clip_state_dict_from_hf(load_weights(root)), "Hugging Face CLIP")
    tokenizer = clip_tokenizer(root) if (root / "vocab.json").is_file() else None
    return model.eval(), tokenizer
