"""Greedy, sampling and beam-search decoding over any model with an LM head.

All three run batched over images; beam search flattens the beams into the batch (row ``b*K + k``
is beam k of image b) and computes the image and prompt once per image before repeating the cache.
A row stops at its EOS: later tokens are the pad id and add nothing to its score; the loop ends when
every row (or, for beams, every image) is finished.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vlp.encoders.base import EncoderOutput
from vlp.models.image_text import ImageInput
from vlp.generation.config import GenerationConfig
from vlp.generation.processors import NEG_INF, apply_bans, filter_for_sampling
from vlp.generation.state import DecodingState, check_prompt, image_for_decoding


@dataclass
class GenerationOutput:
    """sequences [B, T]: generated tokens (prompt excluded), the pad id after EOS; lengths [B]:
    generated tokens including EOS; scores [B]: summed log-probability of those tokens under the
    model; normalized_scores [B]: ``scores / lengths**length_penalty``, what beam search ranks by."""

    sequences: torch.Tensor
    scores: torch.Tensor
    normalized_scores: torch.Tensor
    lengths: torch.Tensor


def _normalize(scores: torch.Tensor, lengths: torch.Tensor, alpha: float) -> torch.Tensor:
    return scores / lengths.clamp_min(1).to(scores.dtype) ** alpha


def _generator(cfg: GenerationConfig, generator: torch.Generator | None, device: torch.device) -> torch.Generator | None:
    if generator is not None or cfg.strategy != "sample":
        return generator
    gen = torch.Generator(device=device)
    if cfg.seed is not None:
        gen.manual_seed(cfg.seed)
    else:
        gen.seed()
    return gen


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    image_input: ImageInput | None,
    config: GenerationConfig,
    prompt_ids: torch.Tensor | None = None,
    prompt_mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    image_features: EncoderOutput | None = None,
) -> GenerationOutput:
    """Generate a continuation of ``prompt_ids`` ([B, P], default one BOS per image) for each image.

    ``image_input`` is what ``model.image_for_fusion`` takes (pixels or region inputs);
    ``image_features`` skips that call when the caller already has them. The model's train/eval
    mode is left as it is (call ``model.eval()`` for deterministic dropout-free decoding).
    """
    if getattr(model, "lm_head", None) is None:
        raise ValueError("this model has no LM head (heads.lm); it cannot generate text")
    image = image_for_decoding(model, image_input, image_features)
    batch, device = image.tokens.shape[0], image.tokens.device
    if prompt_ids is None:
        prompt_ids = torch.full((batch, 1), config.bos_token_id, dtype=torch.long, device=device)
    if prompt_ids.shape[0] != batch:
        raise ValueError(f"{prompt_ids.shape[0]} prompts for {batch} images")
    mask = check_prompt(prompt_ids, prompt_mask)
    state = DecodingState(model, image, prompt_ids, mask, config.prompt_mode, config.use_cache)
    if config.strategy == "beam":  # also for one beam: then it must (and, tested, does) equal greedy
        return _beam_search(state, config, batch)
    return _greedy_or_sample(state, config, batch, _generator(config, generator, device))


def _greedy_or_sample(state: DecodingState, cfg: GenerationConfig, batch: int, generator: torch.Generator | None) -> GenerationOutput:
    device = state.logits.device
    generated = torch.empty(batch, 0, dtype=torch.long, device=device)
    scores = torch.zeros(batch, device=device)
    lengths = torch.zeros(batch, dtype=torch.long, device=device)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    logits = state.logits
    for step in range(cfg.max_new_tokens):
        logprobs = F.log_softmax(logits.float(), dim=-1)
        allowed = apply_bans(logprobs, generated, step, cfg)
        if cfg.strategy == "sample":
            probs = filter_for_sampling(allowed, cfg).softmax(dim=-1)
            token = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        else:
            token = allowed.argmax(dim=-1)
        token = token.masked_fill(finished, cfg.pad_token_id)
        gained = logprobs.gather(1, token[:, None]).squeeze(1)
        scores = scores + torch.where(finished, torch.zeros_like(gained), gained)
        lengths = lengths + (~finished).long()
        generated = torch.cat([generated, token[:, None]], dim=1)
        finished = finished | (token == cfg.eos_token_id)
        if bool(finished.all()) or step + 1 == cfg.max_new_tokens:
            break
        logits = state.advance(token[:, None])[:, -1]
    return GenerationOutput(generated, scores, _normalize(scores, lengths, cfg.length_penalty), lengths)


@dataclass
class _Hypothesis:
    tokens: list[int]
    score: float  # summed log-probability

    def normalized(self, alpha: float) -> float:
        return self.score / max(len(self.tokens), 1) ** alpha


def _beam_search(state: DecodingState, cfg: GenerationConfig, batch: int) -> GenerationOutput:
    """Beam search with Hugging Face's bookkeeping: at each step the 2K best (beam, token)
    extensions are scanned in order; an EOS among the top K closes a hypothesis, other tokens fill
    the K live beams. An image is done when it holds K hypotheses and its best live beam, scored as
    if it ended now, cannot beat the worst of them -- exact for ``length_penalty=0`` (log-probs only
    fall as a beam grows), the usual heuristic otherwise. At ``max_new_tokens`` live beams close too.
    """
    beams, alpha = cfg.num_beams, cfg.length_penalty
    device = state.logits.device
    rows = torch.arange(batch, device=device).repeat_interleave(beams)
    state.reorder(rows)  # the image and prompt ran once per image; now one copy per beam
    logits = state.logits.index_select(0, rows)
    beam_scores = torch.zeros(batch, beams, device=device)
    beam_scores[:, 1:] = NEG_INF  # all beams start equal: expand beam 0 only on the first step
    tokens = torch.empty(batch * beams, 0, dtype=torch.long, device=device)
    hypotheses: list[list[_Hypothesis]] = [[] for _ in range(batch)]
    done = [False] * batch

    def add(b: int, hyp: _Hypothesis) -> None:
        kept = hypotheses[b]
        kept.append(hyp)
        if len(kept) > beams:
            kept.remove(min(kept, key=lambda h: h.normalized(alpha)))

    for step in range(cfg.max_new_tokens):
        logprobs = apply_bans(F.log_softmax(logits.float(), dim=-1), tokens, step, cfg)
        vocab = logprobs.shape[1]
        candidates = (beam_scores.reshape(-1, 1) + logprobs).reshape(batch, beams * vocab)
        top_scores, top_index = candidates.topk(min(2 * beams, beams * vocab), dim=1)
        top_scores_l, top_beam_l, top_token_l = top_scores.tolist(), (top_index // vocab).tolist(), (top_index % vocab).tolist()
        history = tokens.tolist()
        next_scores = torch.full((batch, beams), NEG_INF, device=device)
        next_source = torch.arange(batch * beams, device=device).reshape(batch, beams).clone()
        next_token = torch.full((batch, beams), cfg.pad_token_id, dtype=torch.long, device=device)
        for b in range(batch):
            if done[b]:
                continue
            slot = 0
            for rank, (score, beam, token) in enumerate(zip(top_scores_l[b], top_beam_l[b], top_token_l[b])):
                if score == NEG_INF:
                    break
                source = b * beams + beam
                if token == cfg.eos_token_id:
                    if rank < beams:
                        add(b, _Hypothesis(history[source] + [token], score))
                    continue
                next_scores[b, slot], next_source[b, slot], next_token[b, slot] = score, source, token
                slot += 1
                if slot == beams:
                    break
            best_live = float(next_scores[b, 0])
            if len(hypotheses[b]) >= beams:
                worst = min(h.normalized(alpha) for h in hypotheses[b])
                done[b] = best_live == NEG_INF or worst >= best_live / (step + 1) ** alpha
            elif best_live == NEG_INF:
                done[b] = True
        source = next_source.reshape(-1)
        tokens = torch.cat([tokens.index_select(0, source), next_token.reshape(-1, 1)], dim=1)
        beam_scores = next_scores
        if all(done) or step + 1 == cfg.max_new_tokens:
            break
        state.reorder(source, within_image=True)
        logits = state.advance(next_token.reshape(-1, 1))[:, -1]

    history, final_scores = tokens.tolist(), beam_scores.tolist()
    for b in range(batch):
        if not done[b]:
            for k in range(beams):
                if final_scores[b][k] != NEG_INF:
                    add(b, _Hypothesis(history[b * beams + k], final_scores[b][k]))
    best = [max(h, key=lambda x: x.normalized(alpha)) if h else _Hypothesis([], NEG_INF) for h in hypotheses]
    return _pack(best, cfg, device)


def _pack(best: list[_Hypothesis], cfg: GenerationConfig, device: torch.device) -> GenerationOutput:
    width = max(1, max(len(h.tokens) for h in best))
    sequences = torch.full((len(best), width), cfg.pad_token_id, dtype=torch.long, device=device)
    for row, hyp in enumerate(best):
        sequences[row, : len(hyp.tokens)] = torch.tensor(hyp.tokens, dtype=torch.long, device=device)
    lengths = torch.tensor([len(h.tokens) for h in best], dtype=torch.long, device=device)
    scores = torch.tensor([h.score for h in best], dtype=torch.float32, device=device)
    return GenerationOutput(sequences, scores, _normalize(scores, lengths, cfg.length_penalty), lengths)
