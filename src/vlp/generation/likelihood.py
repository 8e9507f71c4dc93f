"""Log-likelihood of given continuations: rank K candidate answers per image (VQA as generation,
ALBEF/BLIP-style answer ranking) or score sampled captions (SCST).

The image and prompt run once per image (the prefill of a KV cache); the cache is then repeated
for the K candidates, which run together in one pass of L tokens. Gradients flow when the caller
has them enabled (SCST needs them), so this function does not switch them off.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vlp.encoders.base import EncoderOutput
from vlp.models.image_text import ImageInput
from vlp.generation.state import DecodingState, check_prompt, image_for_decoding


def sequence_log_likelihood(
    model: torch.nn.Module,
    image_input: ImageInput | None,
    candidate_ids: torch.Tensor,
    candidate_mask: torch.Tensor | None = None,
    prompt_ids: torch.Tensor | None = None,
    prompt_mask: torch.Tensor | None = None,
    bos_token_id: int | None = None,
    prompt_mode: str = "causal",
    use_cache: bool = True,
    image_features: EncoderOutput | None = None,
) -> torch.Tensor:
    """[B, K] summed log p(candidate tokens | image, prompt).

    ``candidate_ids``: [B, K, L] per image, or [K, L] shared by every image (an answer list),
    right-padded with ``candidate_mask`` (1 = real). Include the EOS in the candidates to score
    complete answers. The prompt defaults to one ``bos_token_id`` per image.
    """
    image = image_for_decoding(model, image_input, image_features)
    batch, device = image.tokens.shape[0], image.tokens.device
    if candidate_ids.dim() == 2:
        candidate_ids = candidate_ids[None].expand(batch, -1, -1)
        candidate_mask = None if candidate_mask is None else candidate_mask[None].expand(batch, -1, -1)
    if candidate_ids.dim() != 3 or candidate_ids.shape[0] != batch or candidate_ids.shape[2] == 0:
        raise ValueError(f"candidate_ids must be [B={batch}, K, L] or [K, L] with L >= 1, got {tuple(candidate_ids.shape)}")
    num, length = candidate_ids.shape[1], candidate_ids.shape[2]
    mask = torch.ones_like(candidate_ids) if candidate_mask is None else candidate_mask.long()
    if mask.shape != candidate_ids.shape:
        raise ValueError(f"candidate_mask {tuple(mask.shape)} does not match candidate_ids {tuple(candidate_ids.shape)}")
    if prompt_ids is None:
        if bos_token_id is None:
            raise ValueError("give prompt_ids or bos_token_id")
        prompt_ids = torch.full((batch, 1), bos_token_id, dtype=torch.long, device=device)
    state = DecodingState(model, image, prompt_ids, check_prompt(prompt_ids, prompt_mask), prompt_mode, use_cache)
    rows = torch.arange(batch, device=device).repeat_interleave(num)
    first = state.logits.index_select(0, rows)[:, None]  # [B*K, 1, V]: predicts candidate token 0
    flat_ids, flat_mask = candidate_ids.reshape(batch * num, length), mask.reshape(batch * num, length)
    if length > 1:
        state.reorder(rows)
        rest = state.advance(flat_ids[:, :-1], flat_mask[:, :-1])  # predicts candidate tokens 1..L-1
        logits = torch.cat([first, rest], dim=1)
    else:
        logits = first
    logprobs = F.log_softmax(logits.float(), dim=-1).gather(2, flat_ids[:, :, None]).squeeze(2)
    return (logprobs * flat_mask).sum(dim=1).reshape(batch, num)
