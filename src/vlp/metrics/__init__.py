"""Evaluation metrics."""

from vlp.metrics.retrieval import retrieval_recall, top_k_texts

__all__ = ["retrieval_recall", "top_k_texts"]
