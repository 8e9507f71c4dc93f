"""ViLT's image "encoder": linear patch projection + learned positions, no transformer of its own.

ViLT (Kim et al. 2021) spends almost no compute on the image: one convolution with kernel = stride
turns the image into patch tokens and the single-stream fusion transformer does all the work
("patch for deep fusion" in the lecture). Parameter names follow timm's ViT (`patch_embed.proj`,
`cls_token`, `pos_embed`) so ViT embedding weights can initialise it, as ViLT did.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from vlp.encoders.base import Encoder, EncoderOutput
from vlp.encoders.image.common import PatchDropout, PatchEmbed, check_patch_dropout

__all__ = ["PatchEncoder", "PatchEncoderConfig"]


@dataclass
class PatchEncoderConfig:
    kind: str = "patch"
    image_size: int = 64
    patch_size: int = 8
    width: int = 192
    cls_token: bool = True  # ViLT prepends an image [CLS] whose fused state feeds its heads
    # "mean" by default: without a transformer the [CLS] output is a learned constant, the same for
    # every image, so only the mean of the patch tokens says anything about the image before fusion.
    pool: Literal["cls", "mean"] = "mean"
    patch_dropout: float = 0.0  # ViLT samples 200 of the 576 patches in pre-training: 0.65 at 384 px
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size != 0:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.pool == "cls" and not self.cls_token:
            raise ValueError("pool='cls' needs cls_token=True")
        check_patch_dropout(self.patch_dropout)


class PatchEncoder(Encoder):
    """[CLS] + patch tokens + position embeddings -> [B, 1 + N, D] (no mask: every token is real)."""

    def __init__(self, cfg: PatchEncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.width = cfg.width
        self.num_prefix_tokens = 1 if cfg.cls_token else 0
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.width, image_size=cfg.image_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width)) if cfg.cls_token else None
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + self.num_prefix_tokens, cfg.width))
        self.pos_drop = nn.Dropout(cfg.dropout)
        self.patch_drop = PatchDropout(cfg.patch_dropout, num_prefix_tokens=self.num_prefix_tokens)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed"} | ({"cls_token"} if self.cls_token is not None else set())

    def lock_groups(self) -> list[list[nn.Module | nn.Parameter]]:
        return [[self]]

    def forward(self, pixels: torch.Tensor) -> EncoderOutput:
        x = self.patch_embed(pixels)  # [B, N, D]
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.patch_drop(self.pos_drop(x + self.pos_embed))
        pooled = x[:, 0] if self.cfg.pool == "cls" else x[:, self.num_prefix_tokens :].mean(dim=1)
        return EncoderOutput(tokens=x, pooled=pooled)
