"""Next-token logits for a batch of partial sequences, with or without a KV cache.

`DecodingState` hides the one difference between the two ways of decoding: with a cache the image
and prompt run once (the "prefill") and every step feeds only the new tokens; without one every step
re-runs the model on the whole sequence so far. Both build the same sequence -- the prompt block
(right-padded, [B, P]) followed by the generated tokens, each generated token at text position
``prompt length + step`` of its row -- so the two must agree to rounding, which the tests check.
"""

from __future__ import annotations

import torch

from vlp.encoders.base import EncoderOutput
from vlp.layers import KVCache


def image_for_decoding(model: torch.nn.Module, image_input: object | None, image_features: EncoderOutput | None) -> EncoderOutput:
    """The decoder's view of the images: ``image_features`` when the caller has them already (one
    image pass for several decodings), else ``model.image_for_fusion(image_input)``."""
    if image_features is not None:
        return image_features
    if image_input is None:
        raise ValueError("give image_input (pixels or region inputs) or image_features")
    return model.image_for_fusion(image_input)  # type: ignore[no-any-return]


def check_prompt(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor | None) -> torch.Tensor:
    """The prompt's mask ([B, P], ones when None) after checking it is right-padded and non-empty."""
    if prompt_ids.dim() != 2 or prompt_ids.shape[1] == 0:
        raise ValueError(f"prompt_ids must be [B, P] with P >= 1, got shape {tuple(prompt_ids.shape)}")
    if prompt_mask is None:
        return torch.ones_like(prompt_ids)
    if prompt_mask.shape != prompt_ids.shape:
        raise ValueError(f"prompt_mask {tuple(prompt_mask.shape)} does not match prompt_ids {tuple(prompt_ids.shape)}")
    mask = prompt_mask.long()
    if bool((mask[:, 0] == 0).any()):
        raise ValueError("every prompt needs at least one real token (BOS) in its first position")
    if bool((mask[:, 1:] > mask[:, :-1]).any()):
        raise ValueError("prompts must be right-padded (real tokens first, as TextTokenizer pads)")
    return mask


class DecodingState:
    """Holds what a decoding run has computed so far and returns logits for appended tokens.

    ``logits`` after construction are those for the first generated token: [B, V], read at each
    row's last real prompt token.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        image: EncoderOutput,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        mode: str = "causal",
        use_cache: bool = True,
    ) -> None:
        self.model = model
        batch, width = prompt_ids.shape
        device = prompt_ids.device
        # Seq2seq: the whole prompt block is the bidirectional prefix (its padding is masked anyway).
        self.prefix_length = torch.full((batch,), width, dtype=torch.long, device=device) if mode == "seq2seq" else None
        self.mode = mode
        prompt_lengths = prompt_mask.sum(dim=1)
        self.cache = KVCache() if use_cache else None
        if self.cache is None:
            self.image: EncoderOutput | None = image
            self.ids, self.mask = prompt_ids, prompt_mask
            self.positions = torch.arange(width, device=device).expand(batch, width)
            self.next_position = prompt_lengths
        out = model.decode(image, prompt_ids, prompt_mask, mode=mode, prefix_length=self.prefix_length, cache=self.cache)
        logits = model.lm_logits(out)  # [B, P, V]
        self.logits = logits[torch.arange(batch, device=device), prompt_lengths - 1]

    def reorder(self, index: torch.Tensor, within_image: bool = False) -> None:
        """Keep/repeat rows ``index`` (beam expansion, beam reordering).

        ``within_image``: every row stays with its image (beam reordering), so per-image state
        (the cached image keys) need not move.
        """
        if self.prefix_length is not None:
            self.prefix_length = self.prefix_length.index_select(0, index)
        if self.cache is not None:
            self.cache.reorder(index, cross=not within_image)
            return
        assert self.image is not None
        self.image = self.image.select(index)
        self.ids, self.mask = self.ids.index_select(0, index), self.mask.index_select(0, index)
        self.positions = self.positions.index_select(0, index)
        self.next_position = self.next_position.index_select(0, index)

    def advance(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Append ``tokens`` [R, L] (``mask``: 1 = real, right-padded) and return their logits [R, L, V]."""
        mask = torch.ones_like(tokens) if mask is None else mask.long()
        if self.cache is not None:
            out = self.model.decode(None, tokens, mask, cache=self.cache)
            return self.model.lm_logits(out)  # type: ignore[no-any-return]
        length = tokens.shape[1]
        new_positions = self.next_position[:, None] + torch.arange(length, device=tokens.device)
        self.ids = torch.cat([self.ids, tokens], dim=1)
        self.mask = torch.cat([self.mask, mask], dim=1)
        self.positions = torch.cat([self.positions, new_positions], dim=1)
        self.next_position = self.next_position + mask.sum(dim=1)
        out = self.model.decode(
            self.image, self.ids, self.mask, mode=self.mode, prefix_length=self.prefix_length, position_ids=self.positions
        )
        return self.model.lm_logits(out)[:, -length:]  # type: ignore[no-any-return]
