"""Momentum (EMA) copies: frozen deep copy, mode in sync, closed-form EMA for parameters and buffers."""

import pytest
import torch
from torch import nn

from vlp.models.momentum import MomentumCopy, ema_update, make_momentum_copy


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))


def test_copy_is_frozen_independent_and_follows_train_eval() -> None:
    source = _net()
    twin = make_momentum_copy(source)
    assert all(not p.requires_grad for p in twin.parameters()) and all(p.requires_grad for p in source.parameters())
    assert all(a.data_ptr() != b.data_ptr() for a, b in zip(twin.parameters(), source.parameters()))
    assert twin.training
    assert not make_momentum_copy(source.eval()).training

    task = nn.Module()
    task.model = _net()
    task.model_m = MomentumCopy(task.model, momentum=0.9)
    task.eval()
    assert not task.model_m.module.training
    task.train()
    assert task.model_m.module.training
    assert any(k.startswith("model_m.module.") for k in task.state_dict())  # checkpointed with the task


def test_ema_after_k_updates_equals_the_closed_form() -> None:
    source, m, k = _net(), 0.9, 5
    twin = make_momentum_copy(source)
    start = {n: t.clone() for n, t in twin.state_dict().items()}
    with torch.no_grad():
        for p in source.parameters():
            p.add_(1.0)  # source moves once, then stays: theta_m(k) = m^k theta_0 + (1 - m^k) theta
        source[1].running_mean.fill_(2.0)
        source[1].num_batches_tracked.fill_(7)
    for _ in range(k):
        ema_update(twin, source, m)
    for name, value in twin.state_dict().items():
        target = source.state_dict()[name]
        if value.is_floating_point():
            torch.testing.assert_close(value, m**k * start[name] + (1 - m**k) * target)
        else:
            assert torch.equal(value, target)  # integer buffers are copied


def test_ema_of_a_moving_source_matches_a_python_loop() -> None:
    source, m = nn.Linear(3, 3), 0.7
    twin = make_momentum_copy(source)
    expected = twin.weight.detach().clone()
    for step in range(4):
        with torch.no_grad():
            source.weight.mul_(0.5).add_(step)
        ema_update(twin, source, m)
        expected = m * expected + (1 - m) * source.weight.detach()
    torch.testing.assert_close(twin.weight, expected)


def test_edge_momenta_constant_buffers_and_errors() -> None:
    source = _net()
    twin = make_momentum_copy(source)
    with torch.no_grad():
        for p in source.parameters():
            p.mul_(3.0)
    ema_update(twin, source, 1.0)
    assert not torch.equal(twin[0].weight, source[0].weight)
    ema_update(twin, source, 0.0)
    assert torch.equal(twin[0].weight, source[0].weight)
    same = torch.full((5,), 0.1234567)
    a, b = nn.Module(), nn.Module()
    a.register_buffer("c", same.clone())
    b.register_buffer("c", same.clone())
    ema_update(a, b, 0.995)
    assert torch.equal(a.c, same)  # lerp leaves agreeing values bit-exact
    with pytest.raises(ValueError, match="momentum"):
        ema_update(twin, source, 1.5)
    with pytest.raises(ValueError, match="different parameters"):
        ema_update(twin, nn.Linear(4, 3), 0.5)


def test_momentum_forward_builds_no_graph() -> None:
    source = nn.Linear(4, 2)
    out = MomentumCopy(source)(torch.randn(3, 4, requires_grad=True))
    assert not out.requires_grad
