"""Token prediction head for MLM and LM: BERT's transform (dense + GELU + LayerNorm) and a decoder
whose weight is tied to the word embeddings (fewer parameters, and the input and output spaces of
a token stay the same, which is what BERT/UNITER/ALBEF pre-trained with).

``transform=False`` drops the transform: the head is one Linear over the text states (GIT's
``output`` layer, whose decoder already ends every layer in a LayerNorm)."""

from __future__ import annotations

import torch
from torch import nn


class TokenPredictionHead(nn.Module):
    def __init__(
        self, width: int, vocab_size: int, tied_embedding: nn.Embedding | None = None, eps: float = 1e-12,
        transform: bool = True,
    ) -> None:
        super().__init__()
        # Identity when there is no transform, so a head without one has no parameters for it.
        self.dense: nn.Module = nn.Linear(width, width) if transform else nn.Identity()
        self.act: nn.Module = nn.GELU() if transform else nn.Identity()
        self.norm: nn.Module = nn.LayerNorm(width, eps=eps) if transform else nn.Identity()
        self.bias = nn.Parameter(torch.zeros(vocab_size))
        # Kept out of this module's children (a plain list) so the embedding is registered once, by
        # its text encoder; state dicts then hold one copy and device moves reach it there.
        self._tied: list[nn.Embedding] = [tied_embedding] if tied_embedding is not None else []
        self.decoder_weight = None
        if tied_embedding is None:
            self.decoder_weight = nn.Parameter(torch.empty(vocab_size, width))
            nn.init.trunc_normal_(self.decoder_weight, std=0.02)
        elif tied_embedding.embedding_dim != width:
            raise ValueError(f"cannot tie a {tied_embedding.embedding_dim}-wide embedding to a {width}-wide head")

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B, L, D] -> [B, L, V] logits."""
        return nn.functional.linear(*self.projection_inputs(tokens))

    def projection_inputs(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(transformed tokens [..., D], weight [V, D], bias [V]): the logits are their ``F.linear``.

        Exposed so a loss can fuse the vocabulary projection with its softmax
        (``vlp.objectives.linear_cross_entropy``) instead of materialising [..., V] logits."""
        weight = self._tied[0].weight if self._tied else self.decoder_weight
        assert weight is not None
        return self.norm(self.act(self.dense(tokens))), weight, self.bias
