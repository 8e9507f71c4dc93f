"""BERT-style token masking for masked language modelling (MLM), with an explicit generator.

Masking lives in data/ (architecture boundary 5): it is a property of the batch, drawn once per
sample in the collator or dataset, never inside a model's forward. All randomness comes from the
``generator`` argument, so a seeded data pipeline reproduces the same masks on every run and in
every DataLoader worker that owns its own generator.

Rules (BERT / UNITER / ALBEF): each real, non-special token is selected with probability ``rate``;
selected tokens are replaced by ``[MASK]`` with ``replace_prob`` (80 %), by a random non-special
token with ``random_prob`` (10 %), and kept otherwise (10 %). ``labels`` hold the original id at
selected positions and -100 elsewhere (the ignore index of ``F.cross_entropy``).

Unlike BERT, every row that has at least one maskable token gets at least one selected token: a
short caption (5 words at 15 %) otherwise has no target ~44 % of the time, and a batch in which
no row has a target gives a NaN mean loss. The forced token is chosen uniformly among the row's
candidates (with ``whole_word``, its whole word is selected). This raises the effective rate for
very short rows only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import torch

__all__ = ["IGNORE_INDEX", "continuation_table", "mask_tokens", "special_token_ids", "word_start_mask"]

IGNORE_INDEX = -100


class _Vocab(Protocol):
    vocab_size: int

    def get_vocab(self) -> dict[str, int]: ...


def special_token_ids(tokenizer: object) -> list[int]:
    """The ids MLM must never select: pad, cls, sep, mask, bos, eos (as set on a ``TextTokenizer``).

    ``[UNK]`` is not included: it stands for real text, and whether to predict it is the caller's call.
    """
    roles = ("pad_id", "cls_id", "sep_id", "mask_id", "bos_id", "eos_id")
    return sorted({int(getattr(tokenizer, r)) for r in roles if getattr(tokenizer, r, None) is not None})


def continuation_table(tokenizer: _Vocab) -> torch.Tensor:
    """[V] bool, True for WordPiece continuation tokens ("##x"). Compute once and reuse per batch."""
    table = torch.zeros(tokenizer.vocab_size, dtype=torch.bool)
    for token, index in tokenizer.get_vocab().items():
        if token.startswith("##") and index < tokenizer.vocab_size:
            table[index] = True
    return table


def word_start_mask(input_ids: torch.Tensor, tokenizer: _Vocab | torch.Tensor) -> torch.Tensor:
    """[B, L] bool, True where a token starts a word; a "##x" token belongs to the previous word.

    ``tokenizer`` may be a tokenizer (its vocabulary is scanned) or a precomputed ``continuation_table``.
    """
    table = tokenizer if isinstance(tokenizer, torch.Tensor) else continuation_table(tokenizer)
    return ~table.to(input_ids.device)[input_ids]


def _rand(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def mask_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    mask_id: int,
    vocab_size: int,
    special_ids: Iterable[int],
    generator: torch.Generator,
    rate: float = 0.15,
    replace_prob: float = 0.8,
    random_prob: float = 0.1,
    whole_word: bool = False,
    word_starts: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(masked_ids [B, L], labels [B, L])`` for MLM; inputs are not modified.

    Never selects padding (``attention_mask == 0``) or ``special_ids``. ``whole_word=True`` selects
    whole words (``word_starts`` from ``word_start_mask``): all pieces of a word are masked together,
    so the model cannot recover "##ing" from "runn" next to it. The random draws are made in a fixed
    order whatever the options, so one generator state gives one mask.
    """
    if not 0.0 <= rate <= 1.0 or replace_prob < 0 or random_prob < 0 or replace_prob + random_prob > 1.0:
        raise ValueError(f"bad masking probabilities: rate={rate}, replace={replace_prob}, random={random_prob}")
    if whole_word and word_starts is None:
        raise ValueError("whole_word=True needs word_starts (see word_start_mask)")
    device = input_ids.device
    batch, length = input_ids.shape
    specials = torch.tensor(sorted(set(int(i) for i in special_ids)), dtype=input_ids.dtype, device=device)
    candidates = attention_mask.bool() & ~torch.isin(input_ids, specials)

    select_draw = _rand((batch, length), generator, device)
    force_draw = _rand((batch, length), generator, device)
    kind_draw = _rand((batch, length), generator, device)
    allowed = torch.ones(vocab_size, dtype=torch.bool)
    allowed[specials[(specials >= 0) & (specials < vocab_size)].cpu()] = False
    allowed_ids = allowed.nonzero().squeeze(1).to(device=device, dtype=input_ids.dtype)
    random_pick = torch.randint(
        0, max(1, allowed_ids.numel()), (batch, length), generator=generator, device=generator.device
    ).to(device)

    # index of the first token of each position's word (the position itself for token-level masking)
    positions = torch.arange(length, device=device).expand(batch, length)
    if whole_word:
        assert word_starts is not None
        starts = word_starts.to(device).bool() | ~candidates  # specials / padding always start a "word"
        word_of = torch.where(starts, positions, torch.zeros_like(positions)).cummax(dim=1).values
        selected = (select_draw.gather(1, word_of) < rate) & candidates
    else:
        word_of = positions
        selected = (select_draw < rate) & candidates

    # rows with candidates but no selection: force the candidate with the largest draw (uniform)
    needs = candidates.any(dim=1) & ~selected.any(dim=1)
    forced_pos = force_draw.masked_fill(~candidates, -1.0).argmax(dim=1, keepdim=True)
    forced = (word_of == word_of.gather(1, forced_pos)) & candidates & needs[:, None]
    selected = selected | forced

    labels = torch.where(selected, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    to_mask = selected & (kind_draw < replace_prob)
    to_random = selected & (kind_draw >= replace_prob) & (kind_draw < replace_prob + random_prob)
    masked = torch.where(to_mask, torch.full_like(input_ids, mask_id), input_ids)
    if allowed_ids.numel() > 0:
        masked = torch.where(to_random, allowed_ids[random_pick], masked)
    return masked, labels
