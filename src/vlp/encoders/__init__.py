"""Image and text encoders, selected by the `kind` of their config through one registry each.

Image kinds: ``vit`` (our ViT), ``patch`` (ViLT linear patches), ``timm`` (any timm backbone),
``cnn_grid`` (ResNet feature map, Pixel-BERT/SimVLM), ``region`` (detector region features,
BUTD/UNITER; takes `RegionInputs`, not pixels). Text kinds: ``bert`` (our BERT-style transformer)
and ``hf`` (a local Hugging Face model). `ImageEncoderConfig` / `TextEncoderConfig` are the unions
of the registered configs, so a config file picks an encoder with its ``kind`` key.

Heavy or optional dependencies (timm, torchvision, transformers) are imported only when an
encoder that needs them is built.
"""

from __future__ import annotations

from vlp.encoders.base import Encoder, EncoderOutput
from vlp.encoders.image.cnn import CNNGridConfig, CNNGridEncoder, build_cnn_grid_encoder
from vlp.encoders.image.patch import PatchEncoder, PatchEncoderConfig
from vlp.encoders.image.region import RegionEncoder, RegionEncoderConfig, RegionInputs
from vlp.encoders.image.timm_adapter import TimmEncoder, TimmEncoderConfig, build_timm_encoder
from vlp.encoders.image.vit import ViTConfig, VisionTransformer
from vlp.encoders.text.hf import HFTextConfig, HFTextEncoder, build_hf_text_encoder
from vlp.encoders.text.transformer import TextTransformer, TextTransformerConfig, build_text_transformer
from vlp.registry import Registry

IMAGE_ENCODERS: Registry = Registry("image encoder")
TEXT_ENCODERS: Registry = Registry("text encoder")

IMAGE_ENCODERS.register("vit", config=ViTConfig)(VisionTransformer)
IMAGE_ENCODERS.register("patch", config=PatchEncoderConfig)(PatchEncoder)
IMAGE_ENCODERS.register("timm", config=TimmEncoderConfig)(build_timm_encoder)
IMAGE_ENCODERS.register("cnn_grid", config=CNNGridConfig)(build_cnn_grid_encoder)
IMAGE_ENCODERS.register("region", config=RegionEncoderConfig)(RegionEncoder)
TEXT_ENCODERS.register("bert", config=TextTransformerConfig)(build_text_transformer)
TEXT_ENCODERS.register("hf", config=HFTextConfig)(build_hf_text_encoder)

# Discriminated unions for the config system (vlp.config): the `kind` key selects the member.
ImageEncoderConfig = ViTConfig | PatchEncoderConfig | TimmEncoderConfig | CNNGridConfig | RegionEncoderConfig
TextEncoderConfig = TextTransformerConfig | HFTextConfig


def build_image_encoder(cfg: ImageEncoderConfig) -> Encoder:
    return IMAGE_ENCODERS.get(cfg.kind)(cfg)


def build_text_encoder(cfg: TextEncoderConfig) -> Encoder:
    return TEXT_ENCODERS.get(cfg.kind)(cfg)


__all__ = [
    "IMAGE_ENCODERS",
    "TEXT_ENCODERS",
    "CNNGridConfig",
    "CNNGridEncoder",
    "Encoder",
    "EncoderOutput",
    "HFTextConfig",
    "HFTextEncoder",
    "ImageEncoderConfig",
    "PatchEncoder",
    "PatchEncoderConfig",
    "RegionEncoder",
    "RegionEncoderConfig",
    "RegionInputs",
    "TextEncoderConfig",
    "TextTransformer",
    "TextTransformerConfig",
    "TimmEncoder",
    "TimmEncoderConfig",
    "ViTConfig",
    "VisionTransformer",
    "build_image_encoder",
    "build_text_encoder",
]
