"""Hugging Face GIT (``GitForCausalLM``) -> vlp's GIT: CLIP ViT + self-attention decoder + LM head.

GIT (Wang et al. 2022) is our `git` preset with these options set, so no GIT-only model exists:
  image tower   CLIP's ViT (`ViTConfig(pre_norm=True, patch_bias=False)`, QuickGELU, eps 1e-5); its
                final LayerNorm covers every token, as GIT's ``post_layernorm`` does
  projection    ``visual_projection`` = Linear + LayerNorm into the text width, at any widths
                (`SelfAttentionDecoderConfig.image_proj_norm_eps`)
  decoder       BERT post-norm layers over [image; text]: image tokens see each other, text sees the
                image and earlier text, which is our ``causal`` mode; no modality type embeddings
                (``type_embeddings=False``)
  text input    BERT word + position embeddings + LayerNorm, no segment table, positions from 0
  LM head       one Linear ``output`` (``lm_transform=False``), tied to the word embeddings only
                when the config says ``tie_word_embeddings``
The BERT parts are converted by `bert_state_dict_from_hf`, the CLIP tower by
`clip_state_dict_from_hf`, so GIT adds only its own names here. Video GIT
(``num_image_with_embedding``: several frames with temporal embeddings) is refused: vlp's image
input is one image per row.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from vlp.data.tokenizer import TextTokenizer
from vlp.encoders import TextTransformerConfig, ViTConfig
from vlp.encoders.convert import StateDict, bert_state_dict_from_hf
from vlp.fusion import SelfAttentionDecoderConfig
from vlp.models import HeadsConfig, ImageTextModel, ModelConfig, build_model
from vlp.pretrained.clip_arch import activation, mlp_ratio
from vlp.pretrained.common import PretrainedError, load_converted, load_weights, read_json
from vlp.pretrained.hf_clip import clip_state_dict_from_hf
from vlp.pretrained.tokenizers import bert_tokenizer

__all__ = ["git_config_from_hf", "git_state_dict_from_hf", "load_hf_git"]

_SOURCE = "Hugging Face GIT"
_VISION = "git.image_encoder."  # + CLIP's vision_model.* names
_TEXT_PARTS = ("git.embeddings.", "git.encoder.")  # BERT's names under "git."
_OTHER = {
    "git.visual_projection.visual_projection.0.weight": "fusion.image_proj.0.weight",
    "git.visual_projection.visual_projection.0.bias": "fusion.image_proj.0.bias",
    "git.visual_projection.visual_projection.1.weight": "fusion.image_proj.1.weight",
    "git.visual_projection.visual_projection.1.bias": "fusion.image_proj.1.bias",
    "output.bias": "lm_head.bias",
    "output.weight": "lm_head.decoder_weight",
}


def git_config_from_hf(config: Mapping[str, Any]) -> ModelConfig:
    """Our GIT `ModelConfig` for a Hugging Face ``GitConfig`` dict (its ``config.json``)."""
    vision = config.get("vision_config")
    if not isinstance(vision, Mapping) or "hidden_size" not in config:
        raise PretrainedError("not a GIT config.json: vision_config / hidden_size missing")
    if config.get("num_image_with_embedding") is not None:
        raise PretrainedError(
            f"video GIT (num_image_with_embedding={config['num_image_with_embedding']}) is not supported: "
            "vlp reads one image per row, without GIT's temporal embeddings"
        )
    if config.get("hidden_act", "gelu") != "gelu":
        raise PretrainedError(f"GIT text hidden_act {config.get('hidden_act')!r} is not supported (GELU)")
    width, vision_width = int(config["hidden_size"]), int(vision["hidden_size"])
    heads, text_eps = int(config["num_attention_heads"]), float(config.get("layer_norm_eps", 1e-12))
    vision_eps = float(vision.get("layer_norm_eps", 1e-5))
    return ModelConfig(
        image_encoder=ViTConfig(
            image_size=int(vision["image_size"]), patch_size=int(vision["patch_size"]), width=vision_width,
            depth=int(vision["num_hidden_layers"]), num_heads=int(vision["num_attention_heads"]),
            mlp_ratio=mlp_ratio(vision_width, int(vision["intermediate_size"]), "GIT vision"), pool="cls",
            pre_norm=True, patch_bias=False, act=activation(vision.get("hidden_act", "quick_gelu"), "GIT vision"),
            eps=vision_eps,
        ),
        text_encoder=TextTransformerConfig(
            vocab_size=int(config["vocab_size"]), max_length=int(config.get("max_position_embeddings", 1024)),
            width=width, depth=0, num_heads=heads, type_vocab_size=0, eps=text_eps,
        ),
        fusion=SelfAttentionDecoderConfig(
            depth=int(config["num_hidden_layers"]), num_heads=heads,
            mlp_ratio=mlp_ratio(width, int(config["intermediate_size"]), "GIT text"), eps=text_eps,
            type_embeddings=False, image_proj_norm_eps=vision_eps,
        ),
        heads=HeadsConfig(lm=True, lm_transform=False, tie_word_embeddings=bool(config.get("tie_word_embeddings", False))),
        contrastive=False,
    )


def git_state_dict_from_hf(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """GitForCausalLM weights -> our names (keys we do not know pass through to be reported)."""
    out: StateDict = {}
    vision = {k.removeprefix(_VISION): v for k, v in state_dict.items() if k.startswith(_VISION)}
    for key, value in clip_state_dict_from_hf(vision).items():
        # Whatever CLIP's converter does not know keeps its GIT name, so the load error names it.
        out[key if key.startswith("image_encoder.") else _VISION + key] = value
    text = {k: v for k, v in state_dict.items() if k.startswith(_TEXT_PARTS)}
    try:
        bert = bert_state_dict_from_hf(text, prefix="git.")
    except ValueError as err:  # an unknown or incomplete BERT layer: say which checkpoint it was
        raise PretrainedError(f"{_SOURCE}: {err}") from err
    for key, value in bert.items():
        out[("text_encoder." if key.startswith("embeddings.") else "fusion.") + key] = value
    for key, value in state_dict.items():
        if not key.startswith((_VISION, *_TEXT_PARTS)):
            out[_OTHER.get(key, key)] = value
    return out


def load_hf_git(path: str | os.PathLike[str]) -> tuple[ImageTextModel, TextTokenizer | None]:
    """A ``GitForCausalLM.save_pretrained`` directory -> (vlp GIT in eval mode, tokenizer or None).

    The tokenizer is BERT's WordPiece from ``vocab.txt`` when present: GIT starts a caption at
    [CLS] (its ``bos_token_id``) and ends it at [SEP], which is `GenerationConfig.for_tokenizer`'s
    framing, so generation from the returned pair needs no extra settings.
    """
    root = Path(path)
    config = read_json(root / "config.json")
    cfg = git_config_from_hf(config)
    weights = load_weights(root)
    if cfg.heads.tie_word_embeddings:  # a tied head is the word embeddings; a stored copy must agree
        head = weights.pop("output.weight", None)
        embeddings = weights.get("git.embeddings.word_embeddings.weight")
        if head is not None and embeddings is not None and not torch.equal(head, embeddings):
            raise PretrainedError("GIT config says tie_word_embeddings but output.weight differs from the word embeddings")
    model = build_model(cfg)
    load_converted(model, git_state_dict_from_hf(weights), _SOURCE)
    tokenizer = bert_tokenizer(root) if (root / "vocab.txt").is_file() else None
    return model.eval(), tokenizer
