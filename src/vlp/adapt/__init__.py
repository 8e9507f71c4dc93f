"""Adapting pre-trained models to downstream tasks (VQA, retrieval re-ranking, zero-shot)."""
