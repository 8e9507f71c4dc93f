"""Changes to next-token scores: bans (min length, repeated n-grams, closed vocabularies) and the
sampling filters (temperature, top-k, nucleus).

Bans set a token's log-probability to -inf without renormalising (as Hugging Face's logits
processors do), so a hypothesis' score stays the model's own log-probability of its tokens.
"""

from __future__ import annotations

import torch

from vlp.generation.config import GenerationConfig

NEG_INF = float("-inf")


def banned_ngram_tokens(generated: list[int], n: int) -> set[int]:
    """Tokens that would repeat an n-gram of ``generated`` if appended next."""
    if n <= 0 or len(generated) < n - 1:
        return set()
    if n == 1:
        return set(generated)
    tail = tuple(generated[len(generated) - n + 1 :])
    return {
        generated[start + n - 1]
        for start in range(len(generated) - n + 1)
        if tuple(generated[start : start + n - 1]) == tail
    }


def apply_bans(logprobs: torch.Tensor, generated: torch.Tensor, step: int, cfg: GenerationConfig) -> torch.Tensor:
    """``logprobs`` [R, V] with the tokens ``cfg`` forbids after ``generated`` [R, step] set to -inf."""
    out = logprobs.clone()
    if step < cfg.min_new_tokens:
        out[:, cfg.eos_token_id] = NEG_INF
    if cfg.allowed_token_ids is not None:
        allowed = torch.zeros(out.shape[1], dtype=torch.bool, device=out.device)
        allowed[list(cfg.allowed_token_ids)] = True
        if step >= cfg.min_new_tokens:
            allowed[cfg.eos_token_id] = True
        out = out.masked_fill(~allowed, NEG_INF)
    if cfg.no_repeat_ngram_size > 0 and step >= cfg.no_repeat_ngram_size - 1:
        rows = generated.tolist()
        for row, history in enumerate(rows):
            banned = banned_ngram_tokens(history, cfg.no_repeat_ngram_size)
            if banned:
                out[row, list(banned)] = NEG_INF
    return out


def filter_for_sampling(scores: torch.Tensor, cfg: GenerationConfig) -> torch.Tensor:
    """Temperature, then top-k, then nucleus (top-p) on [R, V] scores; filtered tokens get -inf."""
    scores = scores / cfg.temperature
    if cfg.top_k > 0:
        k = min(cfg.top_k, scores.shape[-1])
        kth = scores.topk(k, dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, NEG_INF)
    if cfg.top_p < 1.0:
        sorted_scores, order = scores.sort(dim=-1, descending=True)
        cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
        # Drop a token when the tokens ranked above it already reach top_p (the first always stays).
        drop_sorted = (cumulative - sorted_scores.softmax(dim=-1)) >= cfg.top_p
        drop = torch.zeros_like(drop_sorted).scatter(1, order, drop_sorted)
        scores = scores.masked_fill(drop, NEG_INF)
    return scores
