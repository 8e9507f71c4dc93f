"""MLM masking: what may be masked, how much, 80/10/10, whole words, reproducibility."""

import pytest
import torch

from vlp.data.masking import continuation_table, mask_tokens, special_token_ids, word_start_mask
from vlp.data.tokenizer import TextTokenizer


@pytest.fixture(scope="module")
def tok() -> TextTokenizer:
    # a vocabulary too small for every word: "sphere", "left", "of" are spelled with "##" pieces
    return TextTokenizer.train_wordpiece(["a red cube left of a blue sphere", "a red cube", "blue"], vocab_size=145)


def _mask(tok, ids, attn, seed=0, **kw):
    return mask_tokens(
        ids, attn, mask_id=tok.mask_id, vocab_size=tok.vocab_size, special_ids=special_token_ids(tok),
        generator=torch.Generator().manual_seed(seed), **kw,
    )


def _batch(tok, n=64):
    texts = ["a red cube left of a blue sphere", "red", "a blue cube", "sphere"] * (n // 4)
    return tok.encode_batch(texts, 32)


def test_never_masks_specials_or_padding_and_labels_mark_exactly_the_selection(tok) -> None:
    ids, attn = _batch(tok)
    specials = torch.tensor(special_token_ids(tok))
    for seed in range(5):
        masked, labels = _mask(tok, ids, attn, seed, rate=0.5)
        selected = labels != -100
        assert not (selected & torch.isin(ids, specials)).any() and not (selected & (attn == 0)).any()
        assert torch.equal(labels[selected], ids[selected])
        assert torch.equal(masked[~selected], ids[~selected])  # nothing else changes
        assert not torch.isin(masked[selected & (masked != tok.mask_id)], specials).any()


def test_every_non_empty_row_gets_a_target(tok) -> None:
    ids, attn = _batch(tok)
    _, labels = _mask(tok, ids, attn, rate=0.0)  # even at rate 0
    assert ((labels != -100).sum(dim=1) >= 1).all()
    only_specials = torch.tensor([[tok.cls_id, tok.sep_id, tok.pad_id]])
    _, labels = _mask(tok, only_specials, torch.tensor([[1, 1, 0]]))
    assert (labels == -100).all()  # nothing maskable: no target, no crash


def test_rate_and_80_10_10_split(tok) -> None:
    ids = torch.randint(10, tok.vocab_size, (128, 128))
    attn = torch.ones_like(ids)
    masked, labels = _mask(tok, ids, attn)
    selected = labels != -100
    assert abs(selected.float().mean().item() - 0.15) < 0.015
    to_mask = (masked == tok.mask_id) & selected
    kept = (masked == ids) & selected
    assert abs(to_mask.sum().item() / selected.sum().item() - 0.8) < 0.04
    assert abs(kept.sum().item() / selected.sum().item() - 0.1) < 0.03  # random replacements rarely hit the same id


def test_reproducible_from_the_generator(tok) -> None:
    ids, attn = _batch(tok)
    a, b, c = _mask(tok, ids, attn, 3), _mask(tok, ids, attn, 3), _mask(tok, ids, attn, 4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[1], c[1])


def test_word_starts_follow_wordpiece_continuations(tok) -> None:
    ids, _ = tok.encode_batch(["a red sphere"], 16)
    tokens = [tok.id_to_token(i) for i in ids[0].tolist()]
    assert tokens[:4] == ["[CLS]", "a", "r", "##e"]  # "red" is spelled in pieces
    starts = word_start_mask(ids, tok)[0].tolist()
    assert starts == [not t.startswith("##") for t in tokens] and sum(starts) == 5
    assert torch.equal(word_start_mask(ids, continuation_table(tok)), word_start_mask(ids, tok))


def test_whole_word_masking_selects_all_pieces_of_a_word(tok) -> None:
    ids, attn = _batch(tok)
    starts = word_start_mask(ids, tok)
    for seed in range(5):
        _, labels = _mask(tok, ids, attn, seed, rate=0.3, whole_word=True, word_starts=starts)
        selected = labels != -100
        # a continuation piece is selected exactly when the token before it is
        cont = ~starts[:, 1:] & (attn[:, 1:] == 1)
        assert torch.equal(selected[:, 1:][cont], selected[:, :-1][cont])
        assert selected[:, 1:][cont].any()  # not vacuous: some multi-piece words were masked
        assert (selected.sum(dim=1) >= 1).all()
    with pytest.raises(ValueError, match="word_starts"):
        _mask(tok, ids, attn, whole_word=True)
