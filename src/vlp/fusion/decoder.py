"""Cross-attention text decoder: CoCa's unimodal + multimodal split, BLIP's captioner.

CoCa (Yu et al. 2022) runs the text through ``unimodal_depth`` causal text-only layers, whose
output at an appended [CLS] is the text embedding of its contrastive loss, then through
``multimodal_depth`` causal layers with cross-attention to the image for captioning. With
``unimodal_depth=0`` the module is BLIP's image-grounded text decoder (every layer cross-attends).

The [CLS] is appended at the end so that, under the causal mask, it sees the whole text while no
text token sees it: text states are the same with or without it. `encode_text_unimodal` therefore
computes the [CLS] and `decode` (and `forward`) never do, and a model that needs both runs the
unimodal layers once::

    uni = fusion.encode_text_unimodal(text)      # uni.pooled -> ITC
    out = fusion.decode(image, uni)              # out.text_tokens -> LM head

Only "causal" and "seq2seq" exist here (a decoder with bidirectional text self-attention is the
`cross_attention` fusion).
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
    cross_decoding_inputs,
    init_weights,
    input_projection,
    key_mask,
    resolve_width,
    select_position,
    text_self_mask,
)
from vlp.layers import KVCache, Transformer, TransformerBlock


@dataclass
class CrossAttentionDecoderConfig:
    """CoCa defaults (pre-norm, appended [CLS]); BLIP decoder: ``unimodal_depth=0, cls_token=False``."""

    kind: str = "cross_attention_decoder"
    width: int | None = None  # None: the text encoder's width
    unimodal_depth: int = 3
    multimodal_depth: int = 3
    num_heads: int = 12
    mlp_ratio: float = 4.0
    norm_first: bool = True
    eps: float = 1e-6
    qkv_bias: bool = True
    dropout: float = 0.0
    cls_token: bool = True  # CoCa's appended [CLS]; False: the unimodal embedding is the last real token
    default_mode: AttentionMode = "causal"

    def __post_init__(self) -> None:
        if self.unimodal_depth < 0 or self.multimodal_depth < 1:
            raise ValueError("unimodal_depth must be >= 0 and multimodal_depth >= 1")
        if self.cls_token and self.unimodal_depth == 0:
            raise ValueError("cls_token needs unimodal_depth > 0 (its output would be the bare embedding)")
        if self.default_mode == "bidirectional":
            raise ValueError("a cross-attention decoder has no bidirectional mode; use the cross_attention fusion")
        check_stack(self.multimodal_depth, self.width, self.num_heads, name="multimodal_depth")


class CrossAttentionDecoder(Fusion):
    """Causal text layers, the top ``multimodal_depth`` of which cross-attend to the image."""

    kind: ClassVar[str] = "cross_attention_decoder"
    supports_cache: ClassVar[bool] = True
    modes: ClassVar[tuple[AttentionMode, ...]] = ("causal", "seq2seq")

    def __init__(self, cfg: CrossAttentionDecoderConfig, image_width: int, text_width: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.default_mode = cfg.default_mode
        self.width = width = resolve_width(cfg.width, text_width)
        self.image_proj = input_projection(image_width, width)
        self.text_proj = input_projection(text_width, width)

        def blocks(depth: int, cross: bool) -> Transformer:
            return Transformer(
                [
                    TransformerBlock(
                        width, cfg.num_heads, cfg.mlp_ratio, norm_first=cfg.norm_first, eps=cfg.eps,
                        qkv_bias=cfg.qkv_bias, dropout=cfg.dropout, cross_attention=cross,
                    )
                    for _ in range(depth)
                ]
            )

        self.unimodal = blocks(cfg.unimodal_depth, cross=False)
        self.multimodal = blocks(cfg.multimodal_depth, cross=True)
        self.cls_token = nn.Parameter(torch.zeros(width)) if cfg.cls_token else None
        # Pre-norm: the unimodal embedding and the decoder output each get a final norm (CoCa's
        # ln_final on the [CLS], the decoder's own final norm); the residual stream between stays raw.
        pre_norm = cfg.norm_first
        self.unimodal_norm: nn.Module = nn.LayerNorm(width, eps=cfg.eps) if pre_norm else nn.Identity()
        self.norm: nn.Module = nn.LayerNorm(width, eps=cfg.eps) if pre_norm else nn.Identity()
        init_weights(self)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=0.02)

    def no_weight_decay(self) -> set[str]:
        return {"cls_token"} if self.cls_token is not None else set()

    def encode_text_unimodal(
        self, text: EncoderOutput, mode: AttentionMode | None = None, prefix_length: torch.Tensor | None = None
    ) -> EncoderOutput:
        """Text-only causal layers -> EncoderOutput(tokens [B, L, D], pooled [B, D], mask).

        ``pooled`` is the appended [CLS]'s output (or the last real token's without ``cls_token``),
        normalised: CoCa's text embedding for ITC. ``tokens`` are the raw residual stream the
        multimodal layers continue from (no [CLS]).
        """
        mode = self.resolve_mode(mode, prefix_length)
        t = self.text_proj(text.tokens)
        batch, length, _ = t.shape
        if self.cls_token is None:
            x = self.unimodal(t, attn_mask=text_self_mask(mode, length, text.mask, prefix_length, t.device))
            pooled = select_position(x, text.mask, "last")
            return EncoderOutput(tokens=x, pooled=self.unimodal_norm(pooled), mask=text.mask)
        x = torch.cat([t, self.cls_token.expand(batch, 1, -1)], dim=1)  # [B, L+1, D]
        # The [CLS] is real and, appended after any padding, sees all real text (open_clip's cls_mask).
        real = torch.ones(batch, length + 1, dtype=torch.long, device=t.device)
        if text.mask is not None:
            real[:, :length] = text.mask
        x = self.unimodal(x, attn_mask=text_self_mask(mode, length + 1, real, prefix_length, t.device))
        return EncoderOutput(tokens=x[:, :length], pooled=self.unimodal_norm(x[:, length]), mask=text.mask)

    def decode(
        self,
        image: EncoderOutput,
        unimodal_text: EncoderOutput,
        mode: AttentionMode | None = None,
        prefix_length: torch.Tensor | None = None,
    ) -> FusionOutput:
        """Multimodal layers over `encode_text_unimodal`'s tokens (same mode and prefix as there).

        ``pooled`` is the last real text token, the only one that has seen the image and the whole text.
        """
        mode = self.resolve_mode(mode, prefix_length)
        t = unimodal_text.tokens
        v = self.image_proj(image.tokens)
        mask = text_self_mask(mode, t.shape[1], unimodal_text.mask, prefix_length, t.device)
        x = self.norm(self.multimodal(t, attn_mask=mask, context=v, context_mask=key_mask(image.mask)))
        pooled = select_position(x, unimodal_text.mask, "last")
        return FusionOutput(text_tokens=x, image_tokens=None, pooled=pooled)

    def forward(
        self,
        image: EncoderOutput | None,
        text: EncoderOutput,
        mode: AttentionMode | None = None,
        prefix_length: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> FusionOutput:
        """Unimodal then multimodal layers; ``cache``: incremental decoding (see `Fusion.forward`)."""
        if cache is not None:
            return self._decode_cached(image, text, mode, prefix_length, cache)
        if image is None:
            raise ValueError("the image is needed unless a filled cache is given")
        mode = self.resolve_mode(mode, prefix_length)
        t = self.text_proj(text.tokens)
        # No [CLS] here: under the causal mask it would not change any text state (see module doc).
        x = self.unimodal(t, attn_mask=text_self_mask(mode, t.shape[1], text.mask, prefix_length, t.device))
        return self.decode(image, EncoderOutput(tokens=x, mask=text.mask), mode, prefix_length)

    def _decode_cached(
        self, image: EncoderOutput | None, text: EncoderOutput, mode: AttentionMode | None,
        prefix_length: torch.Tensor | None, cache: KVCache,
    ) -> FusionOutput:
        """Both stacks with one cache: unimodal layers first, then the multimodal ones."""
        t, mask, context, prefill = cross_decoding_inputs(self, image, text, mode, prefix_length, cache)
        depth = len(self.unimodal.blocks)
        x = self.unimodal(t, attn_mask=mask, caches=cache.span(0, depth))
        x = self.multimodal(
            x, attn_mask=mask, context=context, context_mask=cache.context_mask,
            caches=cache.span(depth, len(self.multimodal.blocks)),
        )
        x = self.norm(x)
        pooled = select_position(x, text.mask, "last") if prefill else None
        return FusionOutput(text_tokens=x, image_tokens=None, pooled=pooled)
