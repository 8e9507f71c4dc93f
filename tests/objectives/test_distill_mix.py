"""Momentum distillation loss and the per-step objective draw (UFO)."""

import math

import pytest
import torch

from vlp.objectives import DistillationLoss, distillation_loss, pick_objective, token_prediction_loss


def test_distillation_matches_a_direct_soft_cross_entropy_on_masked_positions() -> None:
    student, teacher = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    mask = torch.tensor([[True, False, True], [False, False, True]])
    total, count = 0.0, 0
    for b in range(2):
        for t in range(3):
            if mask[b, t]:
                p = torch.softmax(teacher[b, t], -1)
                total += -(p * torch.log_softmax(student[b, t], -1)).sum().item()
                count += 1
    assert abs(distillation_loss(student, teacher, mask).item() - total / count) < 1e-5
    assert distillation_loss(student, teacher, torch.zeros(2, 3, dtype=torch.bool)).item() == 0.0


def test_one_hot_teacher_is_hard_cross_entropy_and_teacher_gets_no_gradient() -> None:
    student = torch.randn(4, 6, requires_grad=True)
    labels = torch.tensor([0, 3, 5, 1])
    teacher = torch.full((4, 6), -1e4).scatter(1, labels[:, None], 0.0).requires_grad_()
    loss = DistillationLoss()(student, teacher)
    torch.testing.assert_close(loss, token_prediction_loss(student[None], labels[None]))
    loss.backward()
    assert teacher.grad is None


def test_temperature_scales_by_t_squared() -> None:
    s, t = torch.randn(3, 4), torch.randn(3, 4)
    ref = distillation_loss(s / 2, t / 2) * 4
    torch.testing.assert_close(distillation_loss(s, t, temperature=2.0), ref)
    with pytest.raises(ValueError):
        distillation_loss(s, t, temperature=0.0)


def test_pick_objective_is_reproducible_and_follows_probabilities() -> None:
    names = ["itc", "itm", "mlm"]
    picks = [pick_objective(names, [0.5, 0.0, 1.5], torch.Generator().manual_seed(s)) for s in range(200)]
    assert "itm" not in picks and abs(picks.count("mlm") / 200 - 0.75) < 0.1
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    assert [pick_objective(names, [1, 1, 1], g1) for _ in range(10)] == [pick_objective(names, [1, 1, 1], g2) for _ in range(10)]
    for bad in ([1.0, 1.0], [0.0, 0.0, 0.0], [1.0, -1.0, 1.0], [1.0, math.nan, 1.0]):
        with pytest.raises(ValueError):
            pick_objective(names, bad, torch.Generator())
