"""MLM / LM / PrefixLM losses and their attention masks."""

import torch
import torch.nn.functional as F

from vlp.objectives import (
    LMLoss,
    TokenPredictionLoss,
    labelled_positions,
    lm_labels,
    lm_loss,
    lm_targets,
    prefix_lm_attention_mask,
    prefix_lm_loss,
    sample_prefix_split,
    seq2seq_attention_mask,
    token_prediction_loss,
)

V = 11


def test_ignored_positions_never_contribute_to_mlm() -> None:
    logits = torch.randn(2, 5, V)
    labels = torch.tensor([[-100, 3, -100, 7, -100], [-100, -100, 2, -100, -100]])
    for smoothing in (0.0, 0.1):
        base = token_prediction_loss(logits, labels, smoothing)
        changed = logits.clone()
        changed[labels == -100] = torch.randn(int((labels == -100).sum()), V) * 100
        torch.testing.assert_close(token_prediction_loss(changed, labels, smoothing), base)
    expected = F.cross_entropy(logits[labels != -100], labels[labels != -100])
    torch.testing.assert_close(TokenPredictionLoss()(logits, labels), expected)


def test_no_targets_gives_zero_not_nan() -> None:
    logits = torch.randn(2, 3, V, requires_grad=True)
    loss = token_prediction_loss(logits, torch.full((2, 3), -100))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))


def test_seq2seq_mask_text_never_sees_a_later_token_and_image_sees_image_only() -> None:
    n, text_mask = 3, torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    mask = seq2seq_attention_mask(n, text_mask)
    assert mask.shape == (2, 1, 7, 7) and mask.dtype == torch.bool
    for b in range(2):
        m = mask[b, 0]
        assert m[:n, :n].all() and not m[:n, n:].any()  # image block: bidirectional, blind to text
        assert m[n:, :n].all()  # text sees every image token
        for q in range(4):
            for k in range(4):
                allowed = k <= q and text_mask[b, k] == 1
                assert bool(m[n + q, n + k]) == allowed, (b, q, k)
    assert mask.any(dim=-1).all()  # no all-False row (SDPA would give NaN)
    image_pad = seq2seq_attention_mask(2, text_mask, torch.tensor([[1, 0], [1, 1]]))
    assert not image_pad[0, 0, :, 1].any() and image_pad[1, 0, :, 1].all()


def test_lm_shifts_and_ignores_padding() -> None:
    ids = torch.tensor([[1, 5, 6, 2, 0], [1, 7, 2, 0, 0]])
    mask = (ids != 0).long()
    assert lm_labels(ids, mask).tolist() == [[5, 6, 2, -100], [7, 2, -100, -100]]
    logits = torch.randn(2, 5, V)
    base = lm_loss(logits, ids, mask)
    changed = logits.clone()
    changed[:, -1] = 50.0  # the last position predicts nothing
    changed[1, 2:] = -30.0  # positions whose target is padding
    torch.testing.assert_close(lm_loss(changed, ids, mask), base)
    picked = torch.stack([logits[0, 0], logits[0, 1], logits[0, 2], logits[1, 0], logits[1, 1]])
    torch.testing.assert_close(base, F.cross_entropy(picked, torch.tensor([5, 6, 2, 7, 2])))


def test_prefix_split_range_reproducibility_and_short_rows() -> None:
    mask = torch.tensor([[1] * 6, [1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0], [0] * 6])
    splits = torch.stack([sample_prefix_split(mask, torch.Generator().manual_seed(s), min_prefix=1) for s in range(50)])
    assert splits[:, 0].min() >= 1 and splits[:, 0].max() <= 5 and len(set(splits[:, 0].tolist())) == 5
    assert set(splits[:, 1].tolist()) == {1, 2}
    assert (splits[:, 2] == 1).all() and (splits[:, 3] == 0).all()  # nothing to predict: all prefix
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(sample_prefix_split(mask, g1), sample_prefix_split(mask, g2))


def test_prefix_lm_scores_only_tokens_after_the_split() -> None:
    ids = torch.tensor([[1, 5, 6, 7, 2], [1, 8, 2, 0, 0]])
    mask = (ids != 0).long()
    prefix = torch.tensor([3, 1])
    assert lm_labels(ids, mask, prefix).tolist() == [[-100, -100, 7, 2], [8, 2, -100, -100]]
    logits = torch.randn(2, 5, V)
    base = prefix_lm_loss(logits, ids, mask, prefix)
    changed = logits.clone()
    changed[0, :2] = 40.0  # predictions of prefix tokens
    torch.testing.assert_close(prefix_lm_loss(changed, ids, mask, prefix), base)
    torch.testing.assert_close(LMLoss()(logits, ids, mask, prefix), base)
    torch.testing.assert_close(LMLoss()(logits, ids, mask), lm_loss(logits, ids, mask))


def test_prefix_lm_mask_prefix_bidirectional_rest_causal() -> None:
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    m = prefix_lm_attention_mask(torch.tensor([2]), mask, num_image_tokens=2)[0, 0]  # prefix = 2 image + 2 text
    assert m.shape == (7, 7)
    assert m[:4, :4].all() and not m[:4, 4:].any()  # prefix sees itself only, bidirectionally
    assert m[4, :5].all() and not m[4, 5:].any() and m[5, :6].all()  # causal after the prefix
    assert not m[:, 6].any()  # padding key


def test_projecting_only_labelled_rows_gives_the_full_logits_loss() -> None:
    """lm_targets / labelled_positions select the rows a loss reads; the loss over those rows alone
    equals the loss over full logits with -100 labels (LM, PrefixLM, MLM; with label smoothing)."""
    torch.manual_seed(0)
    ids = torch.tensor([[1, 5, 6, 7, 2], [1, 8, 2, 0, 0], [1, 0, 0, 0, 0]])
    mask = (ids != 0).long()
    logits = torch.randn(3, 5, V, dtype=torch.float64)
    for smoothing in (0.0, 0.1):
        rows, labels = lm_targets(ids, mask)
        assert rows.tolist() == [[True] * 4 + [False], [True, True, False, False, False], [False] * 5]
        assert labels.tolist() == [5, 6, 7, 2, 8, 2]
        torch.testing.assert_close(token_prediction_loss(logits[rows], labels, smoothing), lm_loss(logits, ids, mask, smoothing))
        prefix = torch.tensor([3, 1, 1])
        rows, labels = lm_targets(ids, mask, prefix)
        assert labels.tolist() == [7, 2, 8, 2]
        torch.testing.assert_close(token_prediction_loss(logits[rows], labels, smoothing), prefix_lm_loss(logits, ids, mask, prefix, smoothing))
        mlm = torch.tensor([[-100, 3, -100, 7, -100], [-100, -100, 2, -100, -100], [-100] * 5])
        rows, labels = labelled_positions(mlm)
        torch.testing.assert_close(token_prediction_loss(logits[rows], labels, smoothing), token_prediction_loss(logits, mlm, smoothing))
    rows, labels = lm_targets(ids[2:], mask[2:])  # nothing to predict: 0, not NaN
    assert token_prediction_loss(logits[2:][rows], labels).item() == 0.0
