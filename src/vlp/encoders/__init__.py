"""Image and text encoders, selected by the `kind` of their config through one registry each."""

from __future__ import annotations

from vlp.encoders.base import Encoder, EncoderOutput
from vlp.encoders.image.vit import ViTConfig, VisionTransformer
from vlp.encoders.text.transformer import TextTransformer, TextTransformerConfig
from vlp.registry import Registry

IMAGE_ENCODERS: Registry = Registry("image encoder")
TEXT_ENCODERS: Registry = Registry("text encoder")

IMAGE_ENCODERS.register("vit", config=ViTConfig)(VisionTransformer)
TEXT_ENCODERS.register("bert", config=TextTransformerConfig)(TextTransformer)

ImageEncoderConfig = ViTConfig  # widened to a union of configs as more encoders register
TextEncoderConfig = TextTransformerConfig


def build_image_encoder(cfg: ImageEncoderConfig) -> Encoder:
    return IMAGE_ENCODERS.get(cfg.kind)(cfg)


def build_text_encoder(cfg: TextEncoderConfig) -> Encoder:
    return TEXT_ENCODERS.get(cfg.kind)(cfg)


__all__ = [
    "IMAGE_ENCODERS",
    "TEXT_ENCODERS",
    "Encoder",
    "EncoderOutput",
    "ImageEncoderConfig",
    "TextEncoderConfig",
    "TextTransformer",
    "TextTransformerConfig",
    "ViTConfig",
    "VisionTransformer",
    "build_image_encoder",
    "build_text_encoder",
]
