"""BERT-style text encoder: token + position + segment embeddings and a transformer.

Post-norm with eps 1e-12 by default, matching BERT (Devlin et al. 2019) so that BERT weights map
onto it (`vlp.encoders.convert.bert_state_dict_from_hf`; tests/parity checks the outputs);
`causal=True` gives the decoder variant used by LM objectives. The options `embed_norm`,
`type_vocab_size=0`, `position_offset` and `act` cover the other published text towers whose weights
vlp imports (CLIP: no segment embeddings, no embedding norm, QuickGELU; RoBERTa: positions start
after the padding index); see `vlp.pretrained`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from vlp.encoders.base import Activation, Encoder, EncoderOutput, last_token, masked_mean, set_mlp_activation
from vlp.layers import Transformer, TransformerBlock, causal_mask, combine, padding_mask


@dataclass
class TextTransformerConfig:
    kind: str = "bert"
    vocab_size: int | None = None  # None: taken from the tokenizer when the model is built
    max_length: int = 64
    width: int = 192
    depth: int = 4
    num_heads: int = 3
    mlp_ratio: float = 4.0
    type_vocab_size: int = 2
    norm_first: bool = False
    eps: float = 1e-12
    dropout: float = 0.0
    causal: bool = False
    # "auto": [CLS] (position 0) when bidirectional, the last real token (EOS) when causal, because in a
    # causal stack position 0 has seen only itself and the last token is the only one that saw all.
    pool: Literal["auto", "cls", "mean", "last"] = "auto"
    act: Activation = "gelu"
    # False: no LayerNorm after the embeddings (CLIP's text tower normalises inside each block only).
    embed_norm: bool = True
    # Index of the first position embedding. RoBERTa reserves rows 0..padding_idx, so its tokens use
    # rows padding_idx+1...; its table then has max_length + position_offset rows.
    position_offset: int = 0
    # A local Hugging Face BERT/RoBERTa/MiniLM directory whose weights initialise this tower when
    # `build_text_transformer` builds it (LiT: a pretrained text tower). Weight metadata, not
    # architecture: the fields above must describe that model, or loading fails naming the shapes.
    pretrained: str = ""

    def __post_init__(self) -> None:
        if self.type_vocab_size < 0 or self.position_offset < 0:
            raise ValueError("type_vocab_size and position_offset must be >= 0")
        if self.width % self.num_heads != 0:
            raise ValueError(f"width {self.width} is not divisible by num_heads {self.num_heads}")
        if self.causal and self.pool == "cls":
            raise ValueError("pool='cls' with causal=True pools a token that saw only itself; use 'last' or 'auto'")

    @property
    def resolved_pool(self) -> str:
        if self.pool == "auto":
            return "last" if self.causal else "cls"
        return self.pool


class TextEmbeddings(nn.Module):
    """word + position (+ token-type) embeddings, then LayerNorm (BERT's embedding block).

    `type_vocab_size=0` drops the segment table and `norm=False` the LayerNorm (CLIP). With
    `position_offset` k, token i uses position row k + i (RoBERTa: k = padding_idx + 1; RoBERTa gives
    padding tokens row padding_idx instead, which changes only the masked-out padding outputs).
    """

    def __init__(
        self, vocab_size: int, max_length: int, type_vocab_size: int, width: int, eps: float, dropout: float,
        norm: bool = True, position_offset: int = 0,
    ) -> None:
        super().__init__()
        self.position_offset = position_offset
        self.word_embeddings = nn.Embedding(vocab_size, width)
        self.position_embeddings = nn.Embedding(max_length + position_offset, width)
        self.token_type_embeddings = nn.Embedding(type_vocab_size, width) if type_vocab_size else None
        self.norm: nn.Module = nn.LayerNorm(width, eps=eps) if norm else nn.Identity()
        self.drop = nn.Dropout(dropout)

    def forward(
        self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``position_ids`` [B, L] (default 0..L-1): incremental decoding embeds token t at position t."""
        length = input_ids.shape[1]
        max_length = self.position_embeddings.num_embeddings - self.position_offset
        if position_ids is None:
            if length > max_length:
                raise ValueError(f"text of {length} tokens is longer than max_length {max_length}")
            position_ids = torch.arange(length, device=input_ids.device)[None]
        elif position_ids.numel() and int(position_ids.max()) >= max_length:
            raise ValueError(f"text position {int(position_ids.max())} is beyond max_length {max_length}")
        x = self.word_embeddings(input_ids) + self.position_embeddings(position_ids + self.position_offset)
        if self.token_type_embeddings is None:
            if token_type_ids is not None and bool(token_type_ids.any()):
                raise ValueError("token_type_ids given but this text encoder has no segment embeddings (type_vocab_size=0)")
        elif token_type_ids is None:
            x = x + self.token_type_embeddings.weight[0]
        else:
            x = x + self.token_type_embeddings(token_type_ids)
        return self.drop(self.norm(x))


class TextTransformer(Encoder):
    """Embeddings + transformer; `lock(N)` leaves the last N blocks (and the final norm) trainable."""

    def __init__(self, cfg: TextTransformerConfig) -> None:
        super().__init__()
        if cfg.vocab_size is None:
            raise ValueError("text_encoder.vocab_size is unset: build the model with the tokenizer's vocab size")
        self.cfg = cfg
        self.width = cfg.width
        self.embeddings = TextEmbeddings(
            cfg.vocab_size, cfg.max_length, cfg.type_vocab_size, cfg.width, cfg.eps, cfg.dropout,
            norm=cfg.embed_norm, position_offset=cfg.position_offset,
        )
        self.blocks = Transformer(
            [
                TransformerBlock(cfg.width, cfg.num_heads, cfg.mlp_ratio, norm_first=cfg.norm_first, eps=cfg.eps, dropout=cfg.dropout)
                for _ in range(cfg.depth)
            ]
        )
        # Pre-norm stacks need a final norm; post-norm blocks already end in one.
        self.final_norm: nn.Module = nn.LayerNorm(cfg.width, eps=cfg.eps) if cfg.norm_first else nn.Identity()
        set_mlp_activation(self.blocks, cfg.act)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.trunc_normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def no_weight_decay(self) -> set[str]:
        names = {"embeddings.position_embeddings.weight"}
        if self.embeddings.token_type_embeddings is not None:
            names.add("embeddings.token_type_embeddings.weight")
        return names

    def lock_groups(self) -> list[list[nn.Module | nn.Parameter]]:
        groups: list[list[nn.Module | nn.Parameter]] = [[self.embeddings]]
        groups += [[block] for block in self.blocks.blocks]
        groups[-1].append(self.final_norm)
        return groups

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> EncoderOutput:
        x = self.embeddings(input_ids, token_type_ids)
        if self.cfg.causal and _right_padded(attention_mask):
            # Causal attention alone never lets a real token see a right-side pad, so the padding mask
            # changes only the (ignored) pad positions' outputs; one shared [1, 1, L, L] mask instead of
            # a [B, 1, L, L] one saves building it and turning it additive in every layer (CLIP text).
            mask = causal_mask(x.shape[1], x.device)
        else:
            mask = combine(padding_mask(attention_mask), causal_mask(x.shape[1], x.device) if self.cfg.causal else None)
        x = self.final_norm(self.blocks(x, attn_mask=mask))
        pool = self.cfg.resolved_pool
        if pool == "cls":
            pooled = x[:, 0]
        elif pool == "last":
            pooled = last_token(x, attention_mask)
        else:
            pooled = masked_mean(x, attention_mask)
        return EncoderOutput(tokens=x, pooled=pooled, mask=attention_mask)


def _right_padded(attention_mask: torch.Tensor) -> bool:
    """Every row is real tokens then padding (what TextTokenizer produces), never pad-then-token."""
    return bool((attention_mask[:, 1:] <= attention_mask[:, :-1]).all())


def build_text_transformer(cfg: TextTransformerConfig) -> TextTransformer:
    """The registered builder: the encoder, initialised from `cfg.pretrained` when it is set.

    Loading lives here and not in the constructor, so that building a model by hand never reads
    files, and a checkpoint load (which overwrites the weights anyway) can skip it.
    """
    model = TextTransformer(cfg)
    if cfg.pretrained:
        from vlp.pretrained.hf_text import load_text_weights

        load_text_weights(model, cfg.pretrained)
    return model
