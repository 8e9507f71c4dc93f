import math

import torch
import torch.nn.functional as F

from vlp.objectives import itc_loss


def test_perfectly_aligned_embeddings_at_low_temperature_give_near_zero() -> None:
    emb = F.normalize(torch.eye(8)[:, :8], dim=-1)
    assert itc_loss(emb, emb, 100.0).item() < 1e-3


def test_random_embeddings_near_log_batch() -> None:
    a = F.normalize(torch.randn(64, 16), dim=-1)
    b = F.normalize(torch.randn(64, 16), dim=-1)
    assert abs(itc_loss(a, b, 1.0).item() - math.log(64)) < 0.2


def test_matches_a_direct_computation_of_the_lecture_formula() -> None:
    img = F.normalize(torch.randn(5, 8), dim=-1)
    txt = F.normalize(torch.randn(5, 8), dim=-1)
    t = 0.1
    total = 0.0
    for i in range(5):
        num = math.exp(float(img[i] @ txt[i]) / t)
        total += -math.log(num / sum(math.exp(float(img[i] @ txt[j]) / t) for j in range(5)))
        total += -math.log(num / sum(math.exp(float(img[j] @ txt[i]) / t) for j in range(5)))
    expected = total / (2 * 5)
    assert abs(itc_loss(img, txt, 1 / t).item() - expected) < 1e-4


def test_distinct_image_ids_equal_hard_targets() -> None:
    img = F.normalize(torch.randn(6, 8), dim=-1)
    txt = F.normalize(torch.randn(6, 8), dim=-1)
    torch.testing.assert_close(itc_loss(img, txt, 10.0), itc_loss(img, txt, 10.0, torch.arange(6)))


def test_captions_of_one_image_share_the_target() -> None:
    # rows 0 and 1 are two captions of the same image (two copies of its embedding): the targets
    # spread over both columns, so the aligned configuration reaches the loss's floor, the entropy
    # of the targets (log 2 for those rows), with zero KL left to minimise.
    from vlp.objectives import itc_targets

    img = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), dim=-1)
    txt = img.clone()
    ids = torch.tensor([7, 7, 3])
    targets = itc_targets(ids, 3, img.device)
    torch.testing.assert_close(targets, torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]))
    entropy = -(targets * targets.clamp_min(1e-12).log()).sum(1).mean()
    assert abs(itc_loss(img, txt, 50.0, ids).item() - entropy.item()) < 1e-4
