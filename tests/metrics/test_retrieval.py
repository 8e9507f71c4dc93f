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
