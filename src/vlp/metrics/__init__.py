"""Evaluation metrics."""

from vlp.metrics.caption import CiderD, bleu, cider_d, evaluate_captions, rouge_l
from vlp.metrics.caption_tokenize import ptb_tokenize, tokenize_captions
from vlp.metrics.retrieval import retrieval_recall, top_k_texts

__all__ = [
    "CiderD", "bleu", "cider_d", "evaluate_captions", "ptb_tokenize", "retrieval_recall", "rouge_l", "tokenize_captions",
    "top_k_texts",
]
