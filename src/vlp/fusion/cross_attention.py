"""One-way cross-attention fusion: text layers that also attend to image tokens.

ALBEF's multimodal encoder (the top 6 BERT layers with cross-attention), BLIP's image-grounded
text encoder (ITM) and the one-directional co-attention METER compares against. The input is the *text
encoder's* output; image tokens are keys/values only and come back unchanged, so
`FusionOutput.image_tokens` is None.

"causal" and "seq2seq" put the text self-attention under a causal / prefix mask while every
image token stays visible: that is BLIP's image-grounded text decoder. The CoCa-style decoder
with its own unimodal layers is `vlp.fusion.decoder.CrossAttentionDecoder`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from vlp.encoders.base import EncoderOutput
from vlp.fusion.base import (
    check_stack,
    AttentionMode,
    Fusion,
    FusionOutput,
    PoolPosition,
    Pooler,
    image_key_mask,
    init_weights,
    input_projection,
    pool_index,
    resolve_width,
    select_position,
    text_self_mask,
)
from vlp.layers import Transformer, TransformerBlock


@dataclass
class CrossAttentionFusionConfig:
    """ALBEF/BLIP fusion encoder. ALBEF reads the [CLS] state without a pooler for ITM."""

    kind: str = "cross_attention"
    width: int | None = None  # None: the text encoder's width
    depth: int = 6
    num_heads: int = 12
    mlp_ratio: float = 4.0
    norm_first: bool = False  # BERT post-norm (ALBEF/BLIP initialise these layers from BERT)
    eps: float = 1e-12
    qkv_bias: bool = True
    dropout: float = 0.0
    pooler: bool = False
    pool: PoolPosition = "first"
    default_mode: AttentionMode = "bidirectional"

    def __post_init__(self) -> None:
        check_stack(self.depth, self.width, self.num_heads)


class CrossAttentionFusion(Fusion):
    """Stack of (self-attention, cross-attention to image, MLP) layers over the text tokens."""

    kind: ClassVar[str] = "cross_attention"

    def __init__(self, cfg: CrossAttentionFusionConfig, image_width: int, text_width: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.default_mode = cfg.default_mode
        self.width = width = resolve_width(cfg.width, text_width)
        self.image_proj = input_projection(image_width, width)
        self.text_proj = input_projection(text_width, width)
        self.blocks = Transformer(
            [
                TransformerBlock(
                    width, cfg.num_heads, cfg.mlp_ratio, norm_first=cfg.norm_first, eps=cfg.eps,
                    qkv_bias=cfg.qkv_bias, dropout=cfg.dropout, cross_attention=True,
                )
                for _ in range(cfg.depth)
            ]
        )
        self.norm: nn.Module = nn.LayerNorm(width, eps=cfg.eps) if cfg.norm_first else nn.Identity()
        self.pooler: nn.Module = Pooler(width) if cfg.pooler else nn.Identity()
        init_weights(self)

    def forward(
        self,
        image: EncoderOutput,
        text: EncoderOutput,
        mode: AttentionMode | None = None,
        prefix_length: torch.Tensor | None = None,
    ) -> FusionOutput:
        x = self._run(image, text, self.resolve_mode(mode, prefix_length), prefix_length)
        pooled = self.pooler(select_position(x, text.mask, self.cfg.pool))
        return FusionOutput(text_tokens=x, image_tokens=None, pooled=pooled)

    def pool(
        self, image: EncoderOutput, text: EncoderOutput, mode: AttentionMode | None = None,
        image_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`Fusion.pool`: each distinct image's keys/values projected once per block, and the last
        block's query side (self-attention queries, cross-attention, MLP) run on the pooled row only."""
        t = text.tokens
        rows = pool_index(text.mask, t.shape[0], t.shape[1], self.cfg.pool, t.device)[:, None]
        x = self._run(image, text, self.resolve_mode(mode, None), None, image_index, rows)  # [B, 1, D]
        return self.pooler(x[:, 0])  # type: ignore[no-any-return]

    def _run(
        self, image: EncoderOutput, text: EncoderOutput, mode: AttentionMode, prefix_length: torch.Tensor | None,
        image_index: torch.Tensor | None = None, rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        t = self.text_proj(text.tokens)  # [B, L, D]
        v = self.image_proj(image.tokens)  # [B or U, N, D]
        mask = text_self_mask(mode, t.shape[1], text.mask, prefix_length, t.device)
        context_mask = image_key_mask(image, image_index)
        return self.norm(self.blocks(t, attn_mask=mask, context=v, context_mask=context_mask, context_index=image_index, rows=rows))  # type: ignore[no-any-return]
