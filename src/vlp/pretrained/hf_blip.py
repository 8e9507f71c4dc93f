"""Hugging Face BLIP (``BlipForImageTextRetrieval``, ``BlipForConditionalGeneration``) -> vlp BLIP.

Our BLIP is the paper's sharing scheme: one BERT-style stack whose layers hold an encoder
self-attention, a decoder (causal) self-attention, and one cross-attention and FFN used by both
(`vlp.fusion.blip`). Hugging Face ships the two roles as separate checkpoints:
  retrieval   vision_model + text_encoder (bidirectional, cross-attention) + vision_proj/text_proj +
              itm_head -> our encoder self-attention, cross-attention, FFN, projections, ITM head;
              the decoder self-attention (and the temperature: HF's ITC output is the raw cosine)
              is not in the checkpoint and keeps its initial values
  captioning  vision_model + text_decoder (causal, cross-attention, LM head) -> our decoder
              self-attention, cross-attention, FFN and LM head; the encoder self-attention is not in
              the checkpoint and keeps its initial values
Both require the text and vision widths to be equal (BLIP's own configs): our fusion projects the
image tokens only when they differ, where BLIP's cross-attention reads them at their own width.
The first token follows transformers (`blip_tokenizer`): ITC and ITM read ``[CLS]``; captions are
generated from ``[DEC]`` (the tokenizer's ``decoder_start_id``) and stop at ``[SEP]``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from vlp.data.tokenizer import TextTokenizer
from vlp.encoders import TextTransformerConfig, ViTConfig
from vlp.encoders.convert import StateDict
from vlp.fusion import BLIPTextConfig
from vlp.models import HeadsConfig, ImageTextModel, ModelConfig, build_model
from vlp.pretrained.clip_arch import activation, mlp_ratio
from vlp.pretrained.common import PretrainedError, cat_qkv, load_converted, load_weights, read_json
from vlp.pretrained.tokenizers import blip_tokenizer

__all__ = ["blip_config_from_hf", "blip_state_dict_from_hf", "load_hf_blip"]

_VISION_LAYER = {"self_attn.qkv": "attn.qkv", "self_attn.projection": "attn.proj", "layer_norm1": "norm1",
                 "layer_norm2": "norm2", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
_VISION = {"embeddings.patch_embedding.weight": "patch_embed.proj.weight", "embeddings.patch_embedding.bias": "patch_embed.proj.bias",
           "embeddings.class_embedding": "cls_token", "embeddings.position_embedding": "pos_embed",
           "post_layernorm.weight": "norm.weight", "post_layernorm.bias": "norm.bias"}
_TEXT_LAYER = {"crossattention.self.query": "cross_attn.q", "crossattention.output.dense": "cross_attn.proj",
               "crossattention.output.LayerNorm": "norm_cross", "intermediate.dense": "mlp.fc1", "output.dense": "mlp.fc2",
               "output.LayerNorm": "norm2"}
_HEADS = {"vision_proj": "image_proj", "text_proj": "text_proj", "itm_head": "itm_head.classifier",
          "cls.predictions.transform.dense": "lm_head.dense", "cls.predictions.transform.LayerNorm": "lm_head.norm"}


def blip_config_from_hf(config: Mapping[str, Any], captioning: bool) -> ModelConfig:
    """Our BLIP `ModelConfig` for a Hugging Face ``BlipConfig`` dict (retrieval or captioning heads)."""
    vision, text = config.get("vision_config"), config.get("text_config")
    if not isinstance(vision, Mapping) or not isinstance(text, Mapping):
        raise PretrainedError("not a BLIP config.json: vision_config / text_config missing")
    width, vision_width = int(text["hidden_size"]), int(vision["hidden_size"])
    if not width == vision_width == int(text.get("encoder_hidden_size", vision_width)):
        raise PretrainedError(f"BLIP with text width {width} and vision width {vision_width}: vlp's BLIP needs them equal")
    if text.get("hidden_act", "gelu") != "gelu":
        raise PretrainedError(f"BLIP text hidden_act {text.get('hidden_act')!r} is not supported (GELU)")
    heads = int(text["num_attention_heads"])
    return ModelConfig(
        image_encoder=ViTConfig(
            image_size=int(vision["image_size"]), patch_size=int(vision["patch_size"]), width=vision_width,
            depth=int(vision["num_hidden_layers"]), num_heads=int(vision["num_attention_heads"]),
            mlp_ratio=mlp_ratio(vision_width, int(vision["intermediate_size"]), "BLIP vision"),
            act=activation(vision.get("hidden_act", "gelu"), "BLIP vision"), eps=float(vision.get("layer_norm_eps", 1e-5)),
        ),
        text_encoder=TextTransformerConfig(
            vocab_size=int(text["vocab_size"]), max_length=int(text["max_position_embeddings"]), width=width, depth=0,
            num_heads=heads, type_vocab_size=0, eps=float(text.get("layer_norm_eps", 1e-12)),
        ),
        fusion=BLIPTextConfig(depth=int(text["num_hidden_layers"]), num_heads=heads,
                              mlp_ratio=mlp_ratio(width, int(text["intermediate_size"]), "BLIP text"),
                              eps=float(text.get("layer_norm_eps", 1e-12))),
        heads=HeadsConfig(itm=not captioning, lm=captioning, tie_word_embeddings=captioning),
        contrastive=not captioning,
        embed_dim=int(config.get("image_text_hidden_size", 256)),
        proj_bias=True,
    )


def blip_state_dict_from_hf(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """BLIP retrieval or captioning weights -> our names (unknown keys pass through to be reported)."""
    out: StateDict = {}
    fused: dict[str, dict[str, torch.Tensor]] = {}
    captioning = any(k.startswith("text_decoder.") for k in state_dict)
    text_prefix = "text_decoder.bert." if captioning else "text_encoder."
    self_attn, self_norm = ("decoder_attn", "decoder_norm1") if captioning else ("attn", "norm1")
    for key, value in state_dict.items():
        name, _, kind = key.rpartition(".")
        vision_layer = re.match(r"vision_model\.encoder\.layers\.(\d+)\.(.+)$", name)
        text_layer = re.match(re.escape(text_prefix) + r"encoder\.layer\.(\d+)\.(.+)$", name)
        if key.endswith("position_ids"):
            continue
        if key.startswith("vision_model.") and key[len("vision_model."):] in _VISION:
            out["image_encoder." + _VISION[key[len("vision_model."):]]] = value
        elif vision_layer and vision_layer.group(2) in _VISION_LAYER:
            out[f"image_encoder.blocks.blocks.{vision_layer.group(1)}.{_VISION_LAYER[vision_layer.group(2)]}.{kind}"] = value
        elif name in (f"{text_prefix}embeddings.word_embeddings", f"{text_prefix}embeddings.position_embeddings"):
            out[f"text_encoder.embed.{name.rsplit('.', 1)[1]}.{kind}"] = value
        elif name == f"{text_prefix}embeddings.LayerNorm":
            out[f"text_encoder.embed.norm.{kind}"] = value
        elif text_layer:
            index, part = text_layer.groups()
            layer = f"fusion.layers.{index}"
            qkv = re.match(r"(attention|crossattention)\.self\.(query|key|value)$", part)
            if qkv:
                target = f"{layer}.{self_attn}.qkv.{kind}" if qkv.group(1) == "attention" else None
                if target is None and qkv.group(2) == "query":
                    out[f"{layer}.cross_attn.q.{kind}"] = value
                    continue
                target = target or f"{layer}.cross_attn.kv.{kind}"
                fused.setdefault(target, {})[qkv.group(2)[0]] = value
            elif part == "attention.output.dense":
                out[f"{layer}.{self_attn}.proj.{kind}"] = value
            elif part == "attention.output.LayerNorm":
                out[f"{layer}.{self_norm}.{kind}"] = value
            elif part in _TEXT_LAYER:
                out[f"{layer}.{_TEXT_LAYER[part]}.{kind}"] = value
            else:
                out[key] = value
        elif captioning and key in ("text_decoder.cls.predictions.bias", "text_decoder.cls.predictions.decoder.bias"):
            out["lm_head.bias"] = value
        elif captioning and key == "text_decoder.cls.predictions.decoder.weight":
            continue  # tied to the word embeddings: checked by `load_hf_blip`
        elif name.removeprefix("text_decoder.") in _HEADS:
            out[f"{_HEADS[name.removeprefix('text_decoder.')]}.{kind}"] = value
        else:
            out[key] = value
    for target, parts in fused.items():
        if ".cross_attn." in target:  # our cross-attention fuses [key; value] (its query reads the text)
            out[target] = torch.cat([parts["k"], parts["v"]], dim=0)
        else:
            out[target] = cat_qkv(parts, target)
    return out


def load_hf_blip(path: str | os.PathLike[str]) -> tuple[ImageTextModel, TextTokenizer | None]:
    """A BlipForImageTextRetrieval or BlipForConditionalGeneration directory -> (vlp BLIP, tokenizer).

    BLIP's tokenizer (`blip_tokenizer`: BERT's uncased WordPiece plus ``[DEC]``/``[ENC]``) is built
    from ``vocab.txt`` when present; `GenerationConfig.for_tokenizer` then starts captions at ``[DEC]``.
    """
    root = Path(path)
    weights = load_weights(root)
    captioning = any(k.startswith("text_decoder.") for k in weights)
    config = read_json(root / "config.json")
    cfg = blip_config_from_hf(config, captioning)
    decoder = weights.get("text_decoder.cls.predictions.decoder.weight")
    if captioning and decoder is not None and not torch.equal(decoder, weights["text_decoder.bert.embeddings.word_embeddings.weight"]):
        raise PretrainedError("BLIP captioning checkpoint with an LM decoder not tied to the word embeddings (vlp ties them)")
    model = build_model(cfg)
    unused = r"fusion\.layers\.\d+\.(attn|norm1)\..+" if captioning else r"fusion\.layers\.\d+\.decoder_(attn|norm1)\..+|log_logit_scale"
    load_converted(model, blip_state_dict_from_hf(weights), "Hugging Face BLIP", unused=unused)
    bos = config["text_config"].get("bos_token_id")
    tokenizer = blip_tokenizer(root, None if bos is None else int(bos)) if (root / "vocab.txt").is_file() else None
    return model.eval(), tokenizer
