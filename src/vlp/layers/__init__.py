"""Building blocks shared by encoders, fusion modules and decoders."""

from vlp.layers.attention import CrossAttention, SelfAttention
from vlp.layers.cache import KVCache, LayerCache
from vlp.layers.masks import causal_mask, combine, padding_mask, seq2seq_mask
from vlp.layers.transformer import MLP, Transformer, TransformerBlock, take_mask_rows, take_rows

__all__ = [
    "MLP",
    "CrossAttention",
    "KVCache",
    "LayerCache",
    "SelfAttention",
    "Transformer",
    "TransformerBlock",
    "causal_mask",
    "combine",
    "padding_mask",
    "seq2seq_mask",
    "take_mask_rows",
    "take_rows",
]
