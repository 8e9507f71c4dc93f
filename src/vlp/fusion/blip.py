"""BLIP's multimodal mixture of encoder-decoder (Li et al. 2022), with BLIP's weight sharing.

One BERT-style stack plays three roles: the unimodal text encoder (self-attention + FFN, for
ITC), the image-grounded text encoder (+ cross-attention to the image, for ITM) and the
image-grounded text decoder (for LM). As in BLIP, encoder and decoder share every parameter except
the self-attention layers: each layer holds a bidirectional self-attention for the encoder roles
and a causal one for the decoder, and one cross-attention and one FFN used by both.

The model uses it like the unified transformer: the text "encoder" is just the token embedder,
wrapped in a view whose forward is `encode_text` (see `vlp.fusion.unified.UnifiedTextEncoder`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from vlp.encoders.base import EncoderOutput
from vlp.fusion.base import (
    AttentionMode,
    Fusion,
    FusionOutput,
    check_stack,
    cross_decoding_inputs,
    image_key_mask,
    init_weights,
    input_projection,
    resolve_width,
    run_layers,
    text_self_mask,
)
from vlp.layers import MLP, CrossAttention, KVCache, LayerCache, SelfAttention, take_mask_rows, take_rows


@dataclass
class BLIPTextConfig:
    kind: str = "blip_text"
    width: int | None = None  # None: the text embedding's width
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    eps: float = 1e-12  # BERT post-norm, as BLIP initialises from BERT-base
    qkv_bias: bool = True
    dropout: float = 0.0
    default_mode: AttentionMode = "bidirectional"

    def __post_init__(self) -> None:
        check_stack(self.depth, self.width, self.num_heads)
        if self.default_mode == "seq2seq":
            raise ValueError("blip_text supports the bidirectional (encoder) and causal (decoder) modes")


class BLIPLayer(nn.Module):
    """Post-norm layer: [encoder | decoder] self-attention, optional cross-attention, FFN."""

    def __init__(self, cfg: BLIPTextConfig, width: int) -> None:
        super().__init__()
        self.attn = SelfAttention(width, cfg.num_heads, qkv_bias=cfg.qkv_bias, dropout=cfg.dropout)
        self.norm1 = nn.LayerNorm(width, eps=cfg.eps)
        self.decoder_attn = SelfAttention(width, cfg.num_heads, qkv_bias=cfg.qkv_bias, dropout=cfg.dropout)
        self.decoder_norm1 = nn.LayerNorm(width, eps=cfg.eps)
        self.cross_attn = CrossAttention(width, cfg.num_heads, qkv_bias=cfg.qkv_bias, dropout=cfg.dropout)
        self.norm_cross = nn.LayerNorm(width, eps=cfg.eps)
        self.mlp = MLP(width, int(width * cfg.mlp_ratio), dropout=cfg.dropout)
        self.norm2 = nn.LayerNorm(width, eps=cfg.eps)

    def forward(
        self, x: torch.Tensor, self_mask: torch.Tensor, decoder: bool,
        context: torch.Tensor | None = None, context_mask: torch.Tensor | None = None,
        cache: LayerCache | None = None, context_index: torch.Tensor | None = None,
        rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``cache`` (decoder only): incremental decoding; the image keys come from it once filled.
        ``context_index`` and ``rows``: see `vlp.layers.TransformerBlock` (pairs sharing an image;
        only some positions' outputs wanted)."""
        attn, norm = (self.decoder_attn, self.decoder_norm1) if decoder else (self.attn, self.norm1)
        if rows is None:
            x = norm(x + attn(x, self_mask, cache if decoder else None))
        else:
            picked = take_rows(x, rows)
            x = norm(picked + attn(x, take_mask_rows(self_mask, rows), queries=picked))
        if context is not None or (cache is not None and cache.cross_key is not None):
            x = self.norm_cross(x + self.cross_attn(x, context, context_mask, cache, context_index))
        return self.norm2(x + self.mlp(x))


class BLIPTextTransformer(Fusion):
    kind: ClassVar[str] = "blip_text"
    supports_cache: ClassVar[bool] = True
    modes: ClassVar[tuple[AttentionMode, ...]] = ("bidirectional", "causal")

    def __init__(self, cfg: BLIPTextConfig, image_width: int, text_width: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.default_mode = cfg.default_mode
        self.width = width = resolve_width(cfg.width, text_width)
        self.image_proj = input_projection(image_width, width)
        self.text_proj = input_projection(text_width, width)
        self.layers = nn.ModuleList([BLIPLayer(cfg, width) for _ in range(cfg.depth)])
        self.grad_checkpointing = False
        init_weights(self)

    def _run(
        self, text: EncoderOutput, decoder: bool, mask: torch.Tensor, image: EncoderOutput | None,
        image_index: torch.Tensor | None = None, rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``rows``: positions wanted from the last layer (earlier layers compute every position)."""
        context = None if image is None else self.image_proj(image.tokens)
        context_mask = None if image is None else image_key_mask(image, image_index)
        last = self.layers[-1]
        return run_layers(
            self.layers, self.text_proj(text.tokens), self.grad_checkpointing,
            lambda layer, h: layer(h, mask, decoder, context, context_mask, None, image_index, rows if layer is last else None),
        )

    def encode_text(self, text: EncoderOutput) -> EncoderOutput:
        """Unimodal text encoder (ITC): bidirectional self-attention + FFN, no cross-attention."""
        mask = text_self_mask("bidirectional", text.tokens.shape[1], text.mask, None, text.tokens.device)
        x = self._run(text, decoder=False, mask=mask, image=None)
        return EncoderOutput(tokens=x, pooled=x[:, 0], mask=text.mask)

    def forward(
        self, image: EncoderOutput | None, text: EncoderOutput, mode: AttentionMode | None = None,
        prefix_length: torch.Tensor | None = None, cache: KVCache | None = None,
    ) -> FusionOutput:
        """bidirectional: the image-grounded encoder (ITM, [CLS] pooled); causal: the decoder (LM).

        ``cache`` (causal only): incremental decoding, see `Fusion.forward`."""
        if cache is not None:
            return self._decode_cached(image, text, mode, prefix_length, cache)
        if image is None:
            raise ValueError("the image is needed unless a filled cache is given")
        mode = self.resolve_mode(mode, prefix_length)
        mask = text_self_mask(mode, text.tokens.shape[1], text.mask, prefix_length, text.tokens.device)
        x = self._run(text, decoder=mode == "causal", mask=mask, image=image)
        return FusionOutput(text_tokens=x, image_tokens=None, pooled=x[:, 0])

    def pool(
        self, image: EncoderOutput, text: EncoderOutput, mode: AttentionMode | None = None,
        image_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`Fusion.pool` ([CLS] state): each distinct image's keys/values projected once per layer,
        and the last layer's query side (self-attention queries, cross-attention, FFN) on [CLS] only."""
        mode = self.resolve_mode(mode, None)
        t = text.tokens
        mask = text_self_mask(mode, t.shape[1], text.mask, None, t.device)
        rows = torch.zeros(t.shape[0], 1, dtype=torch.long, device=t.device)
        return self._run(text, decoder=mode == "causal", mask=mask, image=image, image_index=image_index, rows=rows)[:, 0]

    def _decode_cached(
        self, image: EncoderOutput | None, text: EncoderOutput, mode: AttentionMode | None,
        prefix_length: torch.Tensor | None, cache: KVCache,
    ) -> FusionOutput:
        if cache.empty and self.resolve_mode(mode, prefix_length) != "causal":
            raise ValueError("blip_text decodes incrementally in 'causal' mode only")
        t, mask, context, prefill = cross_decoding_inputs(self, image, text, mode, prefix_length, cache)
        for layer, layer_cache in zip(self.layers, cache.span(0, len(self.layers))):
            t = layer(t, mask, True, context, cache.context_mask, layer_cache)
        return FusionOutput(text_tokens=t, image_tokens=None, pooled=t[:, 0] if prefill else None)
