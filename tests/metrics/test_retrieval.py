import torch
import torch.nn.functional as F

from vlp.metrics import retrieval_recall


def naive_recall(img: torch.Tensor, txt: torch.Tensor, owner: torch.Tensor, ks=(1, 5, 10)) -> dict[str, float]:
    sims = img @ txt.t()
    out = {}
    i2t_rank = []
    for i in range(img.shape[0]):
        order = sims[i].argsort(descending=True).tolist()
        i2t_rank.append(min(order.index(j) for j in range(txt.shape[0]) if owner[j] == i))
    t2i_rank = []
    for j in range(txt.shape[0]):
        order = sims[:, j].argsort(descending=True).tolist()
        t2i_rank.append(order.index(int(owner[j])))
    for k in ks:
        out[f"i2t_r{k}"] = 100.0 * sum(r < k for r in i2t_rank) / len(i2t_rank)
    for k in ks:
        out[f"t2i_r{k}"] = 100.0 * sum(r < k for r in t2i_rank) / len(t2i_rank)
    return out


def test_chunked_recall_equals_naive_ranking() -> None:
    torch.manual_seed(1)
    owner = torch.arange(40).repeat_interleave(5)
    img = F.normalize(torch.randn(40, 16), dim=-1)
    txt = F.normalize(img[owner] + 0.9 * torch.randn(200, 16), dim=-1)
    expected = naive_recall(img, txt, owner)
    for chunk in (1, 7, 1000):
        got = retrieval_recall(img, txt, owner, chunk_size=chunk)
        for key, value in expected.items():
            assert abs(got[key] - value) < 1e-6, (chunk, key)


def test_perfect_and_collapsed_embeddings() -> None:
    owner = torch.arange(10).repeat_interleave(2)
    img = torch.eye(10)
    perfect = retrieval_recall(img, img[owner], owner)
    assert perfect["i2t_r1"] == 100.0 and perfect["t2i_r1"] == 100.0
    collapsed = retrieval_recall(torch.ones(10, 4), torch.ones(20, 4), owner)
    assert collapsed["i2t_r1"] == 0.0 and collapsed["t2i_r1"] == 0.0  # ties count against the query


def test_large_gallery_in_chunks_runs() -> None:
    owner = torch.arange(2000).repeat_interleave(5)
    img = F.normalize(torch.randn(2000, 8), dim=-1)
    txt = F.normalize(torch.randn(10000, 8), dim=-1)
    got = retrieval_recall(img, txt, owner, chunk_size=256)
    assert 0.0 <= got["t2i_r10"] <= 5.0  # near chance (0.5 %)


# -- all metrics (ranks, rsum, median / mean rank) against a naive full-matrix reference ------------

import statistics  # noqa: E402

import pytest  # noqa: E402

from vlp.metrics.retrieval import (  # noqa: E402
    Candidates,
    candidate_ranks,
    retrieval_metrics_from_candidates,
    retrieval_metrics_from_scores,
    retrieval_ranks,
    score_matrix_ranks,
)


def naive_ranks(scores: list[list[float]], positive: list[list[bool]]) -> list[int]:
    """0-based rank per row by sorting: best score first, and on a tie negatives before positives
    (pessimistic), so the first positive's position is the number of negatives ahead of it."""
    ranks = []
    for row, pos in zip(scores, positive):
        order = sorted(range(len(row)), key=lambda j: (-row[j], pos[j]))
        ranks.append(next(p for p, j in enumerate(order) if pos[j]))
    return ranks


def naive_metrics(i2t_scores: torch.Tensor, owner: torch.Tensor, t2i_scores: torch.Tensor | None = None) -> dict[str, float]:
    t2i_scores = i2t_scores.t() if t2i_scores is None else t2i_scores
    num_images, num_texts = i2t_scores.shape
    i2t = naive_ranks(i2t_scores.tolist(), [[int(owner[j]) == i for j in range(num_texts)] for i in range(num_images)])
    t2i = naive_ranks(t2i_scores.tolist(), [[int(owner[j]) == i for i in range(num_images)] for j in range(num_texts)])
    out = {}
    for name, ranks in (("i2t", i2t), ("t2i", t2i)):
        for k in (1, 5, 10):
            out[f"{name}_r{k}"] = 100.0 * sum(r < k for r in ranks) / len(ranks)
    out["rsum"] = sum(out.values())
    out["r_mean"] = out["rsum"] / 6
    for name, ranks in (("i2t", i2t), ("t2i", t2i)):
        out[f"{name}_medr"] = float(statistics.median(r + 1 for r in ranks))
        out[f"{name}_meanr"] = sum(r + 1 for r in ranks) / len(ranks)
    return out


def _assert_same(got: dict[str, float], expected: dict[str, float]) -> None:
    assert set(expected) <= set(got)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-9), key


def _gallery(ties: bool, equal_counts: bool, seed: int):
    generator = torch.Generator().manual_seed(seed)
    num_images = 23
    counts = torch.full((num_images,), 3) if equal_counts else torch.randint(1, 5, (num_images,), generator=generator)
    owner = torch.arange(num_images).repeat_interleave(counts)
    if ties:  # few distinct values: many exact ties between positives and negatives
        img = torch.randint(-1, 2, (num_images, 3), generator=generator).float()
        txt = torch.randint(-1, 2, (owner.shape[0], 3), generator=generator).float()
    else:
        img = F.normalize(torch.randn(num_images, 8, generator=generator), dim=-1)
        txt = F.normalize(img[owner] + 1.2 * torch.randn(owner.shape[0], 8, generator=generator), dim=-1)
    return img, txt, owner


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("equal_counts", [False, True])
def test_all_metrics_equal_naive_reference(ties: bool, equal_counts: bool) -> None:
    img, txt, owner = _gallery(ties, equal_counts, seed=3)
    expected = naive_metrics(img @ txt.t(), owner)
    for chunk in (1, 4, 1000):
        _assert_same(retrieval_recall(img, txt, owner, chunk_size=chunk), expected)
    _assert_same(retrieval_metrics_from_scores(img @ txt.t(), owner), expected)


def test_rsum_and_ranks_of_a_perfect_model() -> None:
    owner = torch.arange(10).repeat_interleave(2)
    got = retrieval_recall(torch.eye(10), torch.eye(10)[owner], owner)
    assert got["rsum"] == 600.0 and got["r_mean"] == 100.0
    assert got["i2t_medr"] == got["t2i_medr"] == got["i2t_meanr"] == got["t2i_meanr"] == 1.0
    collapsed = retrieval_recall(torch.ones(10, 4), torch.ones(20, 4), owner)
    assert collapsed["t2i_medr"] == 10.0 and collapsed["i2t_medr"] == 19.0  # every negative ahead


def test_separate_direction_matrices() -> None:
    torch.manual_seed(4)
    owner = torch.tensor([0, 0, 1, 2, 2, 2, 3])
    i2t, t2i = torch.randn(4, 7), torch.randn(7, 4)
    _assert_same(retrieval_metrics_from_scores(i2t, owner, t2i), naive_metrics(i2t, owner, t2i))


def test_top_k_candidates_come_from_the_same_pass() -> None:
    img, txt, owner = _gallery(False, False, seed=5)
    ranks = retrieval_ranks(img, txt, owner, chunk_size=5, top_k=4)
    sims = img @ txt.t()
    assert torch.equal(ranks.i2t_top.index, sims.topk(4, dim=1).indices)
    assert torch.equal(ranks.t2i_top.index, sims.t().topk(4, dim=1).indices)
    assert torch.allclose(ranks.t2i_top.scores, sims.t().topk(4, dim=1).values)


@pytest.mark.parametrize("ties", [False, True])
def test_candidate_lists_equal_a_dense_reranked_matrix(ties: bool) -> None:
    img, txt, owner = _gallery(ties, False, seed=6)
    base = retrieval_ranks(img, txt, owner, top_k=5)
    generator = torch.Generator().manual_seed(0)
    rescored = [Candidates(top.index, torch.randint(0, 4, top.index.shape, generator=generator).float()) for top in (base.i2t_top, base.t2i_top)]
    sims = img @ txt.t()
    # no fallback: everything outside the lists scores -inf (ALBEF fills -100), ties pessimistic
    dense = [torch.full_like(m, float("-inf")).scatter(1, c.index, c.scores) for m, c in zip((sims, sims.t()), rescored)]
    expected = naive_metrics(dense[0], owner, dense[1])
    _assert_same(retrieval_metrics_from_candidates(*rescored, owner, img.shape[0]), expected)
    # with the ITC ranking as fallback: the lists move above everything else, which keeps ITC order
    lifted = [m.scatter(1, c.index, c.scores + 1e3) for m, c in zip((sims, sims.t()), rescored)]
    expected = naive_metrics(lifted[0], owner, lifted[1])
    _assert_same(retrieval_metrics_from_candidates(*rescored, owner, img.shape[0], fallback=base), expected)


def test_full_candidate_lists_equal_the_score_matrix() -> None:
    torch.manual_seed(7)
    owner = torch.tensor([0, 1, 1, 2, 3, 3, 3])
    scores = torch.randn(4, 7)
    full_i2t = Candidates(torch.arange(7).expand(4, 7), scores)
    full_t2i = Candidates(torch.arange(4).expand(7, 4), scores.t())
    got = candidate_ranks(full_i2t, full_t2i, owner, 4)
    want = score_matrix_ranks(scores, owner)
    assert torch.equal(got.i2t, want.i2t) and torch.equal(got.t2i, want.t2i)


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="one entry per caption"):
        retrieval_recall(torch.eye(3), torch.eye(3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics_from_scores(torch.tensor([[float("nan"), 0.0], [0.0, 1.0]]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="every image"):
        retrieval_recall(torch.eye(3), torch.eye(3), torch.tensor([0, 0, 1]))
