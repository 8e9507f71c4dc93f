"""Single-stream fusion: concatenate text and image tokens, one self-attention transformer.

UNITER / OSCAR / VisualBERT (post-norm, BERT-initialised) and ViLT (pre-norm) are this module in
"bidirectional" mode. The same module with a causal or seq2seq mask is the GIT self-attention
decoder and the VLP/UniLM unified encoder-decoder, so those are registered as kinds of their own
that differ only in defaults (`SelfAttentionDecoderConfig`, `UnifiedSeq2SeqConfig`): one code path,
three names a preset can ask for.

The joint sequence is [text; image] (UNITER, ViLT), so the text [CLS] sits at position 0. GIT and
VLP write [image; text]; with masks built per modality (see `vlp.fusion.base`) and no joint
position embeddings the outputs are the same, so the order is not a config option.
Hugging Face GIT checkpoints (`vlp.pretrained.hf_git`) set ``type_embeddings=False`` and
``image_proj_norm_eps`` (GIT's Linear + LayerNorm visual projection); the defaults are UNITER's.
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
    cached_step_mask,
    init_weights,
    input_projection,
    joint_mask,
    real_tokens,
    resolve_width,
    select_position,
)
from vlp.layers import KVCache, Transformer, TransformerBlock


@dataclass
class SingleStreamConfig:
    """UNITER-style joint encoder. ViLT: ``norm_first=True, eps=1e-6``."""

    kind: str = "single_stream"
    width: int | None = None  # None: the text encoder's width
    depth: int = 6
    num_heads: int = 12
    mlp_ratio: float = 4.0
    norm_first: bool = False  # UNITER/VisualBERT post-norm (BERT init); ViLT pre-norm
    eps: float = 1e-12
    qkv_bias: bool = True
    dropout: float = 0.0
    pooler: bool = True  # BERT pooler (Linear + tanh) on the pooled position
    pool: PoolPosition = "first"  # text [CLS]; "last" = last real text token (decoders)
    default_mode: AttentionMode = "bidirectional"
    # Learned text/image type embeddings added to the joint sequence (UNITER, ViLT). GIT has none:
    # its image tokens differ from text by their projection, and its decoder weights expect that.
    type_embeddings: bool = True
    # GIT's visual projection: Linear + LayerNorm(this eps) on the image tokens even when the widths
    # agree; None keeps the plain `input_projection` (identity at equal widths).
    image_proj_norm_eps: float | None = None

    def __post_init__(self) -> None:
        check_stack(self.depth, self.width, self.num_heads)
        if self.image_proj_norm_eps is not None and self.image_proj_norm_eps <= 0:
            raise ValueError(f"image_proj_norm_eps must be positive, got {self.image_proj_norm_eps}")


@dataclass
class SelfAttentionDecoderConfig(SingleStreamConfig):
    """GIT's text decoder: self-attention over [image; text] with the seq2seq mask.

    GIT's decoder is BERT-initialised (post-norm); the question of VQA is the text prefix. Pooling
    the last real text token is the only position that has seen the whole text in causal mode.
    """

    kind: str = "self_attention_decoder"
    pooler: bool = False
    pool: PoolPosition = "last"
    default_mode: AttentionMode = "seq2seq"


@dataclass
class UnifiedSeq2SeqConfig(SingleStreamConfig):
    """VLP (Zhou et al. 2020) unified encoder-decoder: one BERT run with the bidirectional mask
    (understanding, MLM) or the seq2seq mask (captioning), chosen per call by ``mode``."""

    kind: str = "unified_seq2seq"
    default_mode: AttentionMode = "bidirectional"


class SingleStreamFusion(Fusion):
    """Joint self-attention over [text; image] with learned modality-type embeddings."""

    kind: ClassVar[str] = "single_stream"
    supports_cache: ClassVar[bool] = True

    def __init__(self, cfg: SingleStreamConfig, image_width: int, text_width: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.kind = cfg.kind  # type: ignore[misc]  # error messages name the registered kind
        self.default_mode = cfg.default_mode
        self.width = width = resolve_width(cfg.width, text_width)
        self.image_proj = input_projection(image_width, width, cfg.image_proj_norm_eps)
        self.text_proj = input_projection(text_width, width)
        # Type 0 = text, 1 = image (UNITER/ViLT): the joint stack is otherwise blind to modality.
        self.type_embeddings = nn.Embedding(2, width) if cfg.type_embeddings else None
        self.blocks = Transformer(
            [
                TransformerBlock(
                    width, cfg.num_heads, cfg.mlp_ratio, norm_first=cfg.norm_first, eps=cfg.eps,
                    qkv_bias=cfg.qkv_bias, dropout=cfg.dropout,
                )
                for _ in range(cfg.depth)
            ]
        )
        # Pre-norm stacks need a final norm; post-norm blocks already end in one.
        self.norm: nn.Module = nn.LayerNorm(width, eps=cfg.eps) if cfg.norm_first else nn.Identity()
        self.pooler: nn.Module = Pooler(width) if cfg.pooler else nn.Identity()
        init_weights(self)

    def no_weight_decay(self) -> set[str]:
        return {"type_embeddings.weight"} if self.type_embeddings is not None else set()

    def _typed(self, tokens: torch.Tensor, proj: nn.Module, type_id: int) -> torch.Tensor:
        """An encoder's tokens in the fusion width, plus their modality embedding when there is one."""
        x = proj(tokens)
        return x if self.type_embeddings is None else x + self.type_embeddings.weight[type_id]

    def forward(
        self,
        image: EncoderOutput | None,
        text: EncoderOutput,
        mode: AttentionMode | None = None,
        prefix_length: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> FusionOutput:
        """Joint pass; with a filled ``cache`` only the new text tokens run (see `Fusion.forward`):
        GIT/VLP decoding computes the image (and prompt) part of every layer once."""
        if cache is not None and not cache.empty:
            return self._step(text, cache)
        if image is None:
            raise ValueError("the image is needed unless a filled cache is given")
        mode = self.resolve_mode(mode, prefix_length)
        t = self._typed(text.tokens, self.text_proj, 0)  # [B, L, D]
        v = self._typed(image.tokens, self.image_proj, 1)  # [B, N, D]
        num_text = t.shape[1]
        mask = joint_mask(mode, num_text, v.shape[1], text.mask, image.mask, prefix_length, t.device)
        caches = None
        if cache is not None:
            batch = t.shape[0]
            cache.extend_keys(torch.cat([real_tokens(text.mask, batch, num_text, t.device), real_tokens(image.mask, batch, v.shape[1], t.device)], dim=1))
            caches = cache.span(0, len(self.blocks.blocks))
        x = self.norm(self.blocks(torch.cat([t, v], dim=1), attn_mask=mask, caches=caches))  # [B, L+N, D]
        text_tokens, image_tokens = x[:, :num_text], x[:, num_text:]
        pooled = self.pooler(select_position(text_tokens, text.mask, self.cfg.pool))
        return FusionOutput(text_tokens=text_tokens, image_tokens=image_tokens, pooled=pooled)

    def _step(self, text: EncoderOutput, cache: KVCache) -> FusionOutput:
        t = self._typed(text.tokens, self.text_proj, 0)
        mask = cached_step_mask(cache, text.mask, t.shape[0], t.shape[1], t.device)
        x = self.norm(self.blocks(t, attn_mask=mask, caches=cache.span(0, len(self.blocks.blocks))))
        return FusionOutput(text_tokens=x, image_tokens=None, pooled=None)
