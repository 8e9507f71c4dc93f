"""linear_cross_entropy (fused vocabulary projection + softmax) against F.linear + token_prediction_loss."""

import pytest
import torch
import torch.nn.functional as F

from vlp.objectives import linear_cross_entropy, token_prediction_loss
from vlp.objectives import linear_ce


def _inputs(rows: int = 13, width: int = 6, vocab: int = 17, dtype: torch.dtype = torch.float64, bias: bool = True):
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(rows, width, generator=g, dtype=dtype, requires_grad=True)
    weight = torch.randn(vocab, width, generator=g, dtype=dtype, requires_grad=True)
    b = torch.randn(vocab, generator=g, dtype=dtype, requires_grad=True) if bias else None
    labels = torch.randint(0, vocab, (rows,), generator=g)
    return hidden, weight, b, labels


def _loss_and_grads(fn, hidden, weight, bias, labels, smoothing):
    loss = fn(hidden, weight, bias, labels, smoothing)
    params = [t for t in (hidden, weight, bias) if t is not None]
    return loss, torch.autograd.grad(2.5 * loss, params)  # a non-unit upstream gradient


def _reference(hidden, weight, bias, labels, smoothing):
    """F.linear + cross_entropy in the inputs' precision (token_prediction_loss would compute in float32)."""
    return F.cross_entropy(F.linear(hidden, weight, bias), labels, ignore_index=-100, label_smoothing=smoothing)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("chunk_rows", [1, 4, 100])  # chunk boundaries inside and beyond the rows
def test_matches_unfused_loss_and_gradients(monkeypatch, smoothing: float, bias: bool, chunk_rows: int) -> None:
    hidden, weight, b, labels = _inputs(bias=bias)
    monkeypatch.setattr(linear_ce, "CHUNK_FLOATS", chunk_rows * weight.shape[0])
    labels[[2, 7]] = -100  # ignored rows count for nothing
    ours, our_grads = _loss_and_grads(linear_cross_entropy, hidden, weight, b, labels, smoothing)
    ref, ref_grads = _loss_and_grads(_reference, hidden, weight, b, labels, smoothing)
    torch.testing.assert_close(ours, ref)
    for mine, theirs in zip(our_grads, ref_grads, strict=True):
        assert mine.dtype == theirs.dtype
        torch.testing.assert_close(mine, theirs)
    assert our_grads[0][[2, 7]].abs().max() == 0


def test_no_labelled_row_gives_zero_attached_to_the_graph() -> None:
    hidden, weight, b, labels = _inputs()
    loss = linear_cross_entropy(hidden, weight, b, torch.full_like(labels, -100))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert hidden.grad is not None and hidden.grad.abs().max() == 0


def test_float32_and_no_grad_mode() -> None:
    hidden, weight, b, labels = _inputs(dtype=torch.float32)
    with torch.no_grad():
        loss = linear_cross_entropy(hidden, weight, b, labels)
    torch.testing.assert_close(loss, token_prediction_loss(F.linear(hidden, weight, b), labels).detach())
    assert not loss.requires_grad


def test_bf16_autocast_stays_close_to_the_unfused_pair() -> None:
    hidden, weight, b, labels = (t.detach().float().requires_grad_() if t.is_floating_point() else t for t in _inputs())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours, our_grads = _loss_and_grads(linear_cross_entropy, hidden, weight, b, labels, 0.0)
        ref, ref_grads = _loss_and_grads(_reference, hidden, weight, b, labels, 0.0)
    torch.testing.assert_close(ours, ref, atol=2e-2, rtol=2e-2)
    for mine, theirs in zip(our_grads, ref_grads, strict=True):
        assert mine.dtype == torch.float32
        torch.testing.assert_close(mine, theirs, atol=3e-2, rtol=3e-2)


def test_bad_shapes_are_a_clear_error() -> None:
    hidden, weight, b, labels = _inputs()
    with pytest.raises(ValueError, match="hidden"):
        linear_cross_entropy(hidden[None], weight, b, labels)
    with pytest.raises(ValueError, match="label_smoothing"):
        linear_cross_entropy(hidden, weight, b, labels, 1.5)
