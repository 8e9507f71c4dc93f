"""ImageTextModel: injected encoders + projections + a learnable temperature.

The model knows nothing of losses, data loading, devices or distribution (open_clip's
`CLIP` and torchmultimodal's ALBEF show the value of injection): it maps tensors to embeddings,
and objectives turn embeddings into losses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from vlp.encoders import (
    Encoder,
    EncoderOutput,
    ImageEncoderConfig,
    TextEncoderConfig,
    TextTransformerConfig,
    ViTConfig,
    build_image_encoder,
    build_text_encoder,
)


@dataclass
class ModelConfig:
    image_encoder: ImageEncoderConfig = field(default_factory=ViTConfig)
    text_encoder: TextEncoderConfig = field(default_factory=TextTransformerConfig)
    embed_dim: int = 128  # shared embedding space of ITC
    init_temperature: float = 0.07  # CLIP's initial tau
    learn_temperature: bool = True
    max_logit_scale: float = 100.0  # clamp of 1/tau, as in CLIP, so training cannot blow it up
    lock_image: bool = False
    grad_checkpointing: bool = False

    def __post_init__(self) -> None:
        if not 0.0 < self.init_temperature:
            raise ValueError("init_temperature must be positive")
        if self.max_logit_scale < 1.0 / self.init_temperature:
            raise ValueError("max_logit_scale must be at least 1 / init_temperature")


@dataclass
class ModelOutput:
    """Everything a forward pass produced; fields stay None when the architecture has no such output."""

    image_embeds: torch.Tensor | None = None  # [B, E], l2-normalised
    text_embeds: torch.Tensor | None = None  # [B, E], l2-normalised
    logit_scale: torch.Tensor | None = None  # scalar 1/tau, already clamped


class ImageTextModel(nn.Module):
    def __init__(self, image_encoder: Encoder, text_encoder: Encoder, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.image_proj = nn.Linear(image_encoder.width, cfg.embed_dim, bias=False)
        self.text_proj = nn.Linear(text_encoder.width, cfg.embed_dim, bias=False)
        init = torch.tensor(math.log(1.0 / cfg.init_temperature))
        # Stored as log(1/tau) like CLIP: the optimiser then moves tau multiplicatively.
        self.log_logit_scale = nn.Parameter(init, requires_grad=cfg.learn_temperature)
        nn.init.normal_(self.image_proj.weight, std=image_encoder.width**-0.5)
        nn.init.normal_(self.text_proj.weight, std=text_encoder.width**-0.5)
        if cfg.lock_image:
            image_encoder.lock()
        if cfg.grad_checkpointing:
            self.set_grad_checkpointing(True)

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        self.image_encoder.set_grad_checkpointing(enabled)
        self.text_encoder.set_grad_checkpointing(enabled)

    def no_weight_decay(self) -> set[str]:
        names = {"log_logit_scale"}
        names |= {f"image_encoder.{n}" for n in self.image_encoder.no_weight_decay()}
        names |= {f"text_encoder.{n}" for n in self.text_encoder.no_weight_decay()}
        return names

    def logit_scale(self) -> torch.Tensor:
        # The clamp lives here rather than in the training loop so every caller sees the same value;
        # clamp() passes no gradient past the bound, which is what CLIP's post-step clamp achieves.
        return self.log_logit_scale.clamp(max=math.log(self.cfg.max_logit_scale)).exp()

    def image_features(self, pixels: torch.Tensor) -> EncoderOutput:
        return self.image_encoder(pixels)

    def text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> EncoderOutput:
        return self.text_encoder(input_ids, attention_mask)

    def encode_image(self, pixels: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        pooled = self.image_features(pixels).pooled
        assert pooled is not None, "image encoder produced no pooled vector"
        embeds = self.image_proj(pooled)
        return F.normalize(embeds, dim=-1) if normalize else embeds

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        pooled = self.text_features(input_ids, attention_mask).pooled
        assert pooled is not None, "text encoder produced no pooled vector"
        embeds = self.text_proj(pooled)
        return F.normalize(embeds, dim=-1) if normalize else embeds

    def forward(self, pixels: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> ModelOutput:
        return ModelOutput(
            image_embeds=self.encode_image(pixels),
            text_embeds=self.encode_text(input_ids, attention_mask),
            logit_scale=self.logit_scale(),
        )


def build_model(cfg: ModelConfig) -> ImageTextModel:
    """Build a model from a fully resolved config (text vocab size known)."""
    return ImageTextModel(build_image_encoder(cfg.image_encoder), build_text_encoder(cfg.text_encoder), cfg)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


__all__ = ["ImageTextModel", "ModelConfig", "ModelOutput", "TextTransformerConfig", "build_model", "count_parameters"]
