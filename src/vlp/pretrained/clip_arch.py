"""CLIP's architecture as a vlp `ModelConfig`: one place for what the HF and open_clip importers share.

CLIP (Radford et al. 2021) is our dual encoder with these options set: the image ViT normalises
[CLS] + patches before the first block (`pre_norm`), has no patch-projection bias and pools [CLS]
through the final LayerNorm; the text tower is a causal pre-norm transformer without segment
embeddings or embedding LayerNorm, pooled at the last real token (EOS) after its final LayerNorm;
both use QuickGELU in the OpenAI weights and LayerNorm eps 1e-5.
"""

from __future__ import annotations

import math

from vlp.encoders import TextTransformerConfig, ViTConfig
from vlp.encoders.base import Activation
from vlp.models import ModelConfig
from vlp.pretrained.common import PretrainedError

__all__ = ["activation", "clip_model_config", "mlp_ratio"]


def activation(name: str, source: str) -> Activation:
    """A foreign activation name -> ours; anything we cannot reproduce exactly is an error."""
    table: dict[str, Activation] = {"quick_gelu": "quick_gelu", "gelu": "gelu"}
    if name not in table:
        raise PretrainedError(f"{source}: activation {name!r} is not supported (vlp has {sorted(table)})")
    return table[name]


def mlp_ratio(width: int, hidden: int, source: str) -> float:
    ratio = hidden / width
    if int(width * ratio) != hidden:
        raise PretrainedError(f"{source}: MLP width {hidden} is not representable as width {width} * mlp_ratio")
    return ratio


def clip_model_config(
    *,
    image_size: int,
    patch_size: int,
    vision_width: int,
    vision_depth: int,
    vision_heads: int,
    vision_mlp: int,
    vocab_size: int,
    context_length: int,
    text_width: int,
    text_depth: int,
    text_heads: int,
    text_mlp: int,
    embed_dim: int,
    act: Activation,
    eps: float = 1e-5,
    logit_scale: float = math.log(1 / 0.07),
    source: str = "CLIP",
) -> ModelConfig:
    vision = ViTConfig(
        image_size=image_size, patch_size=patch_size, width=vision_width, depth=vision_depth, num_heads=vision_heads,
        mlp_ratio=mlp_ratio(vision_width, vision_mlp, source), pool="cls", pre_norm=True, patch_bias=False, act=act, eps=eps,
    )
    text = TextTransformerConfig(
        vocab_size=vocab_size, max_length=context_length, width=text_width, depth=text_depth, num_heads=text_heads,
        mlp_ratio=mlp_ratio(text_width, text_mlp, source), type_vocab_size=0, norm_first=True, eps=eps, causal=True,
        pool="last", act=act, embed_norm=False,
    )
    init_temperature = math.exp(-logit_scale)
    return ModelConfig(
        image_encoder=vision, text_encoder=text, embed_dim=embed_dim, init_temperature=init_temperature,
        max_logit_scale=max(100.0, 1.0 / init_temperature),
    )
