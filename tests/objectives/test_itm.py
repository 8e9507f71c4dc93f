"""ITM hard-negative sampling: distribution, reproducibility and every degenerate batch."""

import pytest
import torch

from vlp.objectives import ITMLoss, build_itm_pairs, itm_loss, sample_hard_negatives


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _check(negs, ids) -> None:
    """Invariants that hold for any input: valid rows point at a different image, invalid rows at -1."""
    for i in range(len(ids)):
        if negs.valid[i]:
            assert ids[negs.neg_image_idx[i]] != ids[i] and ids[negs.neg_text_idx[i]] != ids[i]
        else:
            assert negs.neg_image_idx[i] == -1 and negs.neg_text_idx[i] == -1


def test_never_samples_a_positive_and_is_reproducible() -> None:
    ids = torch.tensor([0, 0, 1, 2, 2, 3])
    sim = torch.randn(6, 6) * 5
    for seed in range(20):
        negs = sample_hard_negatives(sim, sim.t(), ids, _gen(seed))
        assert negs.valid.all()
        _check(negs, ids)
    a, b = sample_hard_negatives(sim, sim.t(), ids, _gen(7)), sample_hard_negatives(sim, sim.t(), ids, _gen(7))
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_samples_in_proportion_to_softmax_over_negatives() -> None:
    # 400 rows, each with two candidate negatives at logits 1 and 0 (all other columns weight 0)
    n = 400
    rows = torch.arange(n)
    sim = torch.full((n, n), float("-inf"))
    sim[rows, (rows + 1) % n] = 1.0
    sim[rows, (rows + 2) % n] = 0.0
    sim[rows, rows] = 50.0  # the positive, most similar of all, must never be drawn
    negs = sample_hard_negatives(sim, sim, rows, _gen())
    share = (negs.neg_text_idx == (rows + 1) % n).float().mean().item()  # softmax([1, 0])[0] = 0.731
    assert abs(share - 0.731) < 0.07
    assert ((negs.neg_text_idx == (rows + 1) % n) | (negs.neg_text_idx == (rows + 2) % n)).all()


def test_batch_of_one_has_no_valid_negative() -> None:
    negs = sample_hard_negatives(torch.ones(1, 1), torch.ones(1, 1), torch.tensor([4]), _gen())
    assert negs.valid.tolist() == [False] and negs.neg_image_idx.tolist() == [-1] and negs.neg_text_idx.tolist() == [-1]


def test_batch_of_two_picks_the_other_row() -> None:
    negs = sample_hard_negatives(torch.randn(2, 2), torch.randn(2, 2), torch.tensor([0, 1]), _gen())
    assert negs.neg_image_idx.tolist() == [1, 0] and negs.neg_text_idx.tolist() == [1, 0] and negs.valid.all()


def test_all_rows_captions_of_one_image() -> None:
    negs = sample_hard_negatives(torch.randn(4, 4), torch.randn(4, 4), torch.full((4,), 9), _gen())
    assert not negs.valid.any()
    _check(negs, torch.full((4,), 9))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_similarities_fall_back_to_uniform(bad: float) -> None:
    ids = torch.arange(4)
    sim = torch.randn(4, 4)
    sim[0, :] = bad  # whole row non-finite
    sim[1, 2] = bad  # one entry
    for seed in range(10):
        negs = sample_hard_negatives(sim, sim, ids, _gen(seed))
        assert negs.valid.all()
        _check(negs, ids)


def test_all_zero_similarities_are_uniform() -> None:
    ids = torch.arange(400) % 4  # every row: 300 negatives of equal (zero) similarity
    negs = sample_hard_negatives(torch.zeros(400, 400), torch.zeros(400, 400), ids, _gen())
    _check(negs, ids)
    assert negs.neg_image_idx.unique().numel() > 200  # spread over the negatives, not one column
    assert abs((negs.neg_image_idx < 200).float().mean().item() - 0.5) < 0.1


def test_bf16_and_huge_fp16_values_do_not_crash() -> None:
    ids = torch.tensor([0, 1, 1, 2])
    big = torch.full((4, 4), 60000.0, dtype=torch.float16) * torch.tensor([1.0, 2.0, 1.0, 1.0]).half()  # -> inf
    for sim in (torch.randn(4, 4).bfloat16() * 50, big):
        negs = sample_hard_negatives(sim, sim.t(), ids, _gen())
        assert negs.valid.all()
        _check(negs, ids)


def test_empty_batch() -> None:
    negs = sample_hard_negatives(torch.zeros(0, 0), torch.zeros(0, 0), torch.zeros(0, dtype=torch.long), _gen())
    assert negs.neg_image_idx.numel() == 0 and negs.valid.numel() == 0


def test_itm_pairs_ignore_invalid_rows_and_loss_never_nans() -> None:
    ids = torch.tensor([0, 0, 1])
    negs = sample_hard_negatives(torch.randn(3, 3), torch.randn(3, 3), ids, _gen())
    image_index, text_index, labels = build_itm_pairs(*negs)
    assert labels.tolist()[:3] == [1, 1, 1] and labels.tolist()[3:] == [0, 0, 0, 0, 0, 0]
    assert (ids[image_index[3:6]] != ids[text_index[3:6]]).all() and (ids[image_index[6:]] != ids[text_index[6:]]).all()

    lonely = sample_hard_negatives(torch.randn(2, 2), torch.randn(2, 2), torch.tensor([5, 5]), _gen())
    image_index, text_index, labels = build_itm_pairs(*lonely)
    assert image_index.tolist() == [0, 1] * 3 and text_index.tolist() == [0, 1] * 3
    assert labels.tolist() == [1, 1, -100, -100, -100, -100]
    dropped = build_itm_pairs(*lonely, drop_invalid=True)
    assert dropped[2].tolist() == [1, 1] and dropped[0].tolist() == [0, 1]

    logits = torch.randn(6, 2, requires_grad=True)
    loss = itm_loss(logits, labels)
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits[:2], labels[:2]))
    none = ITMLoss()(logits, torch.full((6,), -100))
    none.backward()
    assert none.item() == 0.0 and logits.grad is not None
