"""Vision Transformer image encoder (ViT, Dosovitskiy et al. 2021), our own implementation.

Module and parameter names mirror timm's `VisionTransformer` (`patch_embed.proj`, `cls_token`,
`pos_embed`, `blocks.N.attn.qkv`, `norm`) so timm weights map on one-to-one through
`vlp.encoders.convert.vit_state_dict_from_timm` (tests/parity/test_vit_timm.py checks the outputs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from vlp.encoders.base import Activation, Encoder, EncoderOutput, set_mlp_activation
from vlp.encoders.image.common import PatchDropout, PatchEmbed, check_patch_dropout
from vlp.layers import Transformer, TransformerBlock

__all__ = ["PatchEmbed", "ViTConfig", "VisionTransformer"]


@dataclass
class ViTConfig:
    kind: str = "vit"
    image_size: int = 64
    patch_size: int = 8
    width: int = 192
    depth: int = 4
    num_heads: int = 3
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    dropout: float = 0.0
    pool: Literal["cls", "mean"] = "cls"
    # Share of patch tokens dropped at random in training (FLIP, open_clip `patch_dropout`): less
    # compute per step and a regulariser; [CLS] is always kept; evaluation sees every patch.
    patch_dropout: float = 0.0
    # CLIP's variant (Radford et al. 2021): a LayerNorm on [CLS] + patches before the first block
    # (`norm_pre`, timm's name; CLIP's `ln_pre`), no bias on the patch projection, QuickGELU, eps 1e-5.
    pre_norm: bool = False
    patch_bias: bool = True
    act: Activation = "gelu"
    eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size != 0:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.width % self.num_heads != 0:
            raise ValueError(f"width {self.width} is not divisible by num_heads {self.num_heads}")
        check_patch_dropout(self.patch_dropout)


class VisionTransformer(Encoder):
    """Patch embedding + [CLS] + learned positions + pre-norm transformer + final norm."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.width = cfg.width
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.width, image_size=cfg.image_size, bias=cfg.patch_bias)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, cfg.width))
        self.patch_drop = PatchDropout(cfg.patch_dropout, num_prefix_tokens=1)
        self.norm_pre: nn.Module = nn.LayerNorm(cfg.width, eps=cfg.eps) if cfg.pre_norm else nn.Identity()
        self.blocks = Transformer(
            [
                TransformerBlock(
                    cfg.width, cfg.num_heads, cfg.mlp_ratio, norm_first=True, eps=cfg.eps,
                    qkv_bias=cfg.qkv_bias, dropout=cfg.dropout,
                )
                for _ in range(cfg.depth)
            ]
        )
        self.norm = nn.LayerNorm(cfg.width, eps=cfg.eps)
        set_mlp_activation(self.blocks, cfg.act)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def no_weight_decay(self) -> set[str]:
        return {"cls_token", "pos_embed"}

    def lock_groups(self) -> list[list[nn.Module | nn.Parameter]]:
        """[embeddings], block 0, ..., [last block + final norm]: `lock(N)` trains the last N blocks and norm."""
        blocks: list[nn.Module] = list(self.blocks.blocks)
        groups: list[list[nn.Module | nn.Parameter]] = [[self.patch_embed, self.cls_token, self.pos_embed, self.norm_pre]]
        groups += [[block] for block in blocks]
        groups[-1].append(self.norm)
        return groups

    def forward(self, pixels: torch.Tensor) -> EncoderOutput:
        x = self.patch_embed(pixels)  # [B, N, D]
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed
        x = self.patch_drop(x)  # [B, 1 + K, D] in training with patch_dropout > 0
        x = self.norm(self.blocks(self.norm_pre(x)))
        pooled = x[:, 0] if self.cfg.pool == "cls" else x[:, 1:].mean(dim=1)
        return EncoderOutput(tokens=x, pooled=pooled)
