"""Queue ITC (ALBEF/MoCo), soft targets and the FeatureQueue buffer."""

import math

import pytest
import torch
import torch.nn.functional as F

from vlp.objectives import FeatureQueue, QueueITCLoss, alpha_ramp, itc_loss, itc_loss_with_queue, itc_soft_targets


def _unit(*shape: int) -> torch.Tensor:
    return F.normalize(torch.randn(*shape), dim=-1)


def _grads(fn, *tensors):
    leaves = [t.detach().clone().requires_grad_(True) for t in tensors]
    loss = fn(*leaves)
    loss.backward()
    return loss.detach(), [leaf.grad for leaf in leaves]


@pytest.mark.parametrize("ids", [None, torch.tensor([0, 1, 1, 2, 3])])
def test_empty_queue_equals_in_batch_itc_in_value_and_gradient(ids) -> None:
    img, txt, scale = _unit(5, 8), _unit(5, 8), torch.tensor(7.0)
    junk = torch.randn(6, 8) * 100  # what an empty slot holds must not matter
    empty = torch.full((6,), -1)
    ref_loss, ref_grads = _grads(lambda i, t, s: itc_loss(i, t, s, ids), img, txt, scale)
    loss, grads = _grads(lambda i, t, s: itc_loss_with_queue(i, t, s, junk, junk, ids, empty), img, txt, scale)
    torch.testing.assert_close(loss, ref_loss)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r)


def test_aligned_embeddings_at_low_temperature_give_near_zero_even_with_a_queue() -> None:
    emb = torch.eye(8)
    queue = F.normalize(torch.randn(16, 8), dim=-1) * 0.5  # less similar than the positives
    loss = itc_loss_with_queue(emb, emb, 100.0, queue, queue, queue_ids=torch.arange(16) + 100)
    assert loss.item() < 1e-3


def _reference(img, txt, scale, key_img, key_txt, q_img, q_txt, ids, q_ids, m_img, m_txt, alpha):
    """ALBEF's formula with python loops over rows and columns."""
    b, cols_t, cols_i = len(img), torch.cat([key_txt, q_txt]), torch.cat([key_img, q_img])
    all_ids = ids.tolist() + q_ids.tolist()
    valid = [True] * b + [q != -1 for q in q_ids.tolist()]

    def direction(rows, cols, m_rows):
        total = 0.0
        for i in range(b):
            js = [j for j in range(len(cols)) if valid[j]]
            logits = [scale * float(rows[i] @ cols[j]) for j in js]
            lse = math.log(sum(math.exp(v) for v in logits))
            n_pos = sum(all_ids[j] == ids[i].item() for j in js)
            m_logits = [scale * float(m_rows[i] @ cols[j]) for j in js]
            m_lse = math.log(sum(math.exp(v) for v in m_logits))
            for k, j in enumerate(js):
                hard = (all_ids[j] == ids[i].item()) / n_pos
                target = alpha * math.exp(m_logits[k] - m_lse) + (1 - alpha) * hard
                total -= target * (logits[k] - lse)
        return total / b

    return 0.5 * (direction(img, cols_t, m_img) + direction(txt, cols_i, m_txt))


def test_soft_target_queue_itc_matches_python_loops() -> None:
    b, k, e, scale, alpha = 4, 6, 8, 5.0, 0.4
    img, txt, m_img, m_txt = _unit(b, e), _unit(b, e), _unit(b, e), _unit(b, e)
    q_img, q_txt = _unit(k, e), _unit(k, e)
    ids = torch.tensor([3, 4, 4, 5])
    q_ids = torch.tensor([4, -1, 7, 3, -1, 8])  # queued captions of images 3 and 4 are positives
    loss = itc_loss_with_queue(img, txt, scale, q_img, q_txt, ids, q_ids, m_img, m_txt, alpha=alpha)
    expected = _reference(img, txt, scale, m_img, m_txt, q_img, q_txt, ids, q_ids, m_img, m_txt, alpha)
    assert abs(loss.item() - expected) < 1e-5
    hard = itc_loss_with_queue(img, txt, scale, q_img, q_txt, ids, q_ids, m_img, m_txt)
    assert abs(hard.item() - _reference(img, txt, scale, m_img, m_txt, q_img, q_txt, ids, q_ids, m_img, m_txt, 0.0)) < 1e-5


def test_soft_targets_are_row_stochastic_and_zero_on_masked_columns() -> None:
    hard = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    valid = torch.tensor([True, True, False, True])
    t = itc_soft_targets(torch.randn(1, 4), hard, 0.3, valid)
    assert t[0, 2] == 0 and abs(t.sum().item() - 1) < 1e-6


def test_momentum_keys_get_no_gradient_and_alpha_needs_momentum() -> None:
    img, txt = _unit(3, 4).requires_grad_(), _unit(3, 4).requires_grad_()
    m_img, m_txt = _unit(3, 4).requires_grad_(), _unit(3, 4).requires_grad_()
    q = _unit(2, 4)
    itc_loss_with_queue(img, txt, 10.0, q, q, momentum_image=m_img, momentum_text=m_txt, alpha=0.4).backward()
    assert img.grad is not None and m_img.grad is None and m_txt.grad is None
    with pytest.raises(ValueError, match="momentum"):
        itc_loss_with_queue(img, txt, 10.0, q, q, alpha=0.4)


def test_bf16_features_give_a_finite_float32_loss() -> None:
    img, txt, q = _unit(4, 8).bfloat16(), _unit(4, 8).bfloat16(), _unit(5, 8)
    loss = itc_loss_with_queue(img, txt, torch.tensor(20.0), q, q, torch.arange(4), torch.full((5,), -1))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_alpha_ramp_is_linear_over_the_ramp_then_flat() -> None:
    assert alpha_ramp(0, 100, 0.4) == 0.0
    assert alpha_ramp(50, 100, 0.4) == pytest.approx(0.2)
    assert alpha_ramp(100, 100, 0.4) == alpha_ramp(5000, 100, 0.4) == 0.4
    assert alpha_ramp(3, 0, 0.4) == 0.4


def test_queue_wraps_around_when_the_batch_does_not_divide_its_size() -> None:
    q = FeatureQueue(5, 2)
    assert not q.filled().any()
    for step in range(3):  # 3 x 2 rows into 5 slots: the 6th row overwrites slot 0
        feats = torch.full((2, 2), float(step * 2)) + torch.tensor([[0.0], [1.0]])
        q.enqueue(feats, -feats, torch.tensor([step * 2, step * 2 + 1]))
    assert q.ptr.item() == 1
    assert q.id_queue.tolist() == [5, 1, 2, 3, 4]
    assert q.image_queue[:, 0].tolist() == [5.0, 1.0, 2.0, 3.0, 4.0]
    assert q.text_queue[0, 0].item() == -5.0


def test_queue_keeps_the_last_rows_of_an_oversized_batch_and_round_trips_state() -> None:
    q = FeatureQueue(3, 1)
    q.enqueue(torch.zeros(1, 1), torch.zeros(1, 1))  # ptr 1, id unknown (-2)
    assert q.id_queue.tolist() == [-2, -1, -1]
    feats = torch.arange(7.0)[:, None]
    q.enqueue(feats, feats, torch.arange(7))
    # a sequential write from slot 1 ends with 4, 5, 6 in slots 2, 0, 1 and the pointer at 2
    assert q.id_queue.tolist() == [5, 6, 4] and q.ptr.item() == 2
    fresh = QueueITCLoss(3, 1)
    fresh.queue.load_state_dict(q.state_dict())
    assert torch.equal(fresh.queue.image_queue, q.image_queue) and fresh.queue.ptr.item() == 2


def test_queue_module_uses_its_buffers() -> None:
    loss_fn = QueueITCLoss(4, 8)
    img, txt = _unit(3, 8), _unit(3, 8)
    torch.testing.assert_close(loss_fn(img, txt, 5.0), itc_loss(img, txt, 5.0))
    loss_fn.enqueue(_unit(3, 8), _unit(3, 8), torch.tensor([10, 11, 12]))
    assert loss_fn(img, txt, 5.0).item() > itc_loss(img, txt, 5.0).item()  # more negatives, higher loss
    assert list(loss_fn.parameters()) == []


def test_zero_sized_queue_is_in_batch_itc_and_supports_soft_targets() -> None:
    img, txt, m_img, m_txt = _unit(4, 8), _unit(4, 8), _unit(4, 8), _unit(4, 8)
    none = torch.zeros(0, 8)
    torch.testing.assert_close(itc_loss_with_queue(img, txt, 9.0, none, none), itc_loss(img, txt, 9.0))
    # alpha = 1: pure distillation; with momentum features equal to the online ones the targets are
    # the online softmax itself and the loss is its entropy
    same = itc_loss_with_queue(img, txt, 9.0, none, none, momentum_image=img, momentum_text=txt, alpha=1.0)
    other = itc_loss_with_queue(img, txt, 9.0, none, none, momentum_image=m_img, momentum_text=m_txt, alpha=1.0)
    logits = 9.0 * img @ txt.t()
    entropy = 0.5 * sum(-(p * p.log()).sum(-1).mean() for p in (logits.softmax(-1), logits.t().softmax(-1)))
    torch.testing.assert_close(same, entropy)
    assert abs(other.item() - same.item()) > 1e-3  # the targets come from the momentum features
