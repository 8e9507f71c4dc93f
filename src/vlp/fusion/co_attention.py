"""Two-stream co-attention fusion: LXMERT / ViLBERT / METER.

Each layer keeps one stream per modality with its own weights. A stream runs self-attention,
then cross-attention to the *other* stream's states from the previous layer, then its own MLP
(METER's order; LXMERT puts the cross-attention first and shares its weights between the two
directions, a difference we do not model). Both streams are updated and returned.

Only "bidirectional" is possible: under a causal text mask the image stream would still read
later text tokens and pass them back to earlier text tokens through the next layer's
cross-attention, so a two-stream decoder is not a thing; use `cross_attention_decoder`.

Pooling: LXMERT pools the language [CLS] (``pool="text"``); METER concatenates the pooled text
[CLS] and image [CLS] (``pool="concat"``), which we project back to ``width`` so every fusion
hands heads a [B, D] vector.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

from vlp.encoders.base import EncoderOutput
from vlp.fusion.base import (
    check_stack,
    AttentionMode,
    Fusion,
    FusionOutput,
    Pooler,
    init_weights,
    input_projection,
    key_mask,
    resolve_width,
    run_layers,
    text_self_mask,
    with_self,
)
from vlp.layers import TransformerBlock, padding_mask


@dataclass
class CoAttentionConfig:
    """METER: ``pool="concat"``; LXMERT: ``pool="text"`` (the defaults)."""

    kind: str = "co_attention"
    width: int | None = None  # None: the text encoder's width
    depth: int = 6
    num_heads: int = 12
    mlp_ratio: float = 4.0
    norm_first: bool = False  # BERT-style post-norm in LXMERT and METER
    eps: float = 1e-12
    qkv_bias: bool = True
    dropout: float = 0.0
    pooler: bool = True  # Linear + tanh per pooled [CLS]
    pool: Literal["text", "concat"] = "text"

    def __post_init__(self) -> None:
        check_stack(self.depth, self.width, self.num_heads)


class CoAttentionLayer(nn.Module):
    """One layer of both streams; each reads the other's input states (not its fresh output)."""

    def __init__(self, cfg: CoAttentionConfig, width: int) -> None:
        super().__init__()

        def block() -> TransformerBlock:
            return TransformerBlock(
                width, cfg.num_heads, cfg.mlp_ratio, norm_first=cfg.norm_first, eps=cfg.eps,
                qkv_bias=cfg.qkv_bias, dropout=cfg.dropout, cross_attention=True,
            )

        self.text = block()
        self.image = block()

    def forward(
        self,
        t: torch.Tensor,
        v: torch.Tensor,
        text_mask: torch.Tensor,
        image_mask: torch.Tensor | None,
        text_keys: torch.Tensor | None,
        image_keys: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        new_t = self.text(t, text_mask, context=v, context_mask=image_keys)
        new_v = self.image(v, image_mask, context=t, context_mask=text_keys)
        return new_t, new_v


class CoAttentionFusion(Fusion):
    """Text and image streams exchanging information through cross-attention in every layer."""

    kind: ClassVar[str] = "co_attention"
    modes: ClassVar[tuple[AttentionMode, ...]] = ("bidirectional",)

    def __init__(self, cfg: CoAttentionConfig, image_width: int, text_width: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.width = width = resolve_width(cfg.width, text_width)
        self.image_proj = input_projection(image_width, width)
        self.text_proj = input_projection(text_width, width)
        self.layers = nn.ModuleList([CoAttentionLayer(cfg, width) for _ in range(cfg.depth)])
        self.grad_checkpointing = False
        pre_norm = cfg.norm_first
        self.text_norm: nn.Module = nn.LayerNorm(width, eps=cfg.eps) if pre_norm else nn.Identity()
        self.image_norm: nn.Module = nn.LayerNorm(width, eps=cfg.eps) if pre_norm else nn.Identity()
        self.text_pooler: nn.Module = Pooler(width) if cfg.pooler else nn.Identity()
        self.image_pooler: nn.Module | None = None
        self.concat_proj: nn.Module | None = None
        if cfg.pool == "concat":
            self.image_pooler = Pooler(width) if cfg.pooler else nn.Identity()
            self.concat_proj = nn.Linear(2 * width, width)
        init_weights(self)

    def forward(
        self,
        image: EncoderOutput,
        text: EncoderOutput,
        mode: AttentionMode | None = None,
        prefix_length: torch.Tensor | None = None,
    ) -> FusionOutput:
        mode = self.resolve_mode(mode, prefix_length)
        t = self.text_proj(text.tokens)  # [B, L, D]
        v = self.image_proj(image.tokens)  # [B, N, D]
        text_mask = text_self_mask(mode, t.shape[1], text.mask, None, t.device)
        image_mask = None if image.mask is None else with_self(padding_mask(image.mask).expand(-1, 1, v.shape[1], -1))
        text_keys, image_keys = key_mask(text.mask), key_mask(image.mask)

        def step(layer: nn.Module, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
            return layer(state[0], state[1], text_mask, image_mask, text_keys, image_keys)

        t, v = run_layers(self.layers, (t, v), self.grad_checkpointing, step)
        t, v = self.text_norm(t), self.image_norm(v)
        pooled = self.text_pooler(t[:, 0])
        if self.concat_proj is not None:
            assert self.image_pooler is not None
            pooled = self.concat_proj(torch.cat([pooled, self.image_pooler(v[:, 0])], dim=-1))
        return FusionOutput(text_tokens=t, image_tokens=v, pooled=pooled)
