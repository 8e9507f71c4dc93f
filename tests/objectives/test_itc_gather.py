"""Fake two-rank gather in one process vs one process with the concatenated batch.

How the simulation mirrors DDP: rank r's loss L_r is built with a fake ``all_gather_fn`` whose slot r is
rank r's own tensor and whose other slots are the other ranks' tensors. Summing L_r / W over ranks
and calling backward once gives every feature  (1/W) * sum_r dL_r/dx  where the derivative flows only
along the paths the real collectives allow: through the gather for gather_with_grad=True
(reduce-scatter SUM), only through the local slot otherwise (``gather_tensor`` detaches the rest).
DDP's parameter-gradient average then is exactly that (1/W) * sum.
"""

import pytest
import torch
import torch.nn.functional as F

from vlp.objectives import ITCLoss, gather_features, gathered_itc_loss, itc_loss

W, B, E = 2, 3, 8


def _fake_gather(rank: int, families: list[list[torch.Tensor]]):
    def all_gather(tensor: torch.Tensor) -> list[torch.Tensor]:
        for parts in families:
            if parts[rank] is tensor:
                return [tensor if s == rank else parts[s] for s in range(W)]
        raise AssertionError("unexpected tensor gathered")

    return all_gather


def _simulate(image, text, ids, scale, *, local_loss, gather_with_grad):
    img_parts, txt_parts = list(image.chunk(W)), list(text.chunk(W))
    id_parts = list(ids.chunk(W)) if ids is not None else [None] * W
    families = [img_parts, txt_parts] + ([id_parts] if ids is not None else [])
    total = 0.0
    for r in range(W):
        total = total + gathered_itc_loss(
            img_parts[r], txt_parts[r], scale, id_parts[r], rank=r, world_size=W,
            all_gather_fn=_fake_gather(r, families), local_loss=local_loss, gather_with_grad=gather_with_grad,
        )
    return total / W


def _leaves():
    image = F.normalize(torch.randn(W * B, E), dim=-1).requires_grad_()
    text = F.normalize(torch.randn(W * B, E), dim=-1).requires_grad_()
    return image, text, torch.tensor(4.0, requires_grad=True)


def _run(fn):
    image, text, scale = _leaves()
    loss = fn(image, text, scale)
    loss.backward()
    return loss.detach(), image.grad, text.grad, scale.grad


@pytest.mark.parametrize("ids", [None, torch.tensor([0, 1, 2, 2, 0, 5])], ids=["no-ids", "shared-ids"])
@pytest.mark.parametrize("local_loss", [False, True])
def test_gather_with_grad_equals_the_concatenated_batch(local_loss, ids) -> None:
    torch.manual_seed(1)
    full = _run(lambda i, t, s: itc_loss(i, t, s, ids))
    torch.manual_seed(1)
    sim = _run(lambda i, t, s: _simulate(i, t, ids, s, local_loss=local_loss, gather_with_grad=True))
    for a, b in zip(sim, full):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("ids", [None, torch.tensor([0, 1, 2, 2, 0, 5])], ids=["no-ids", "shared-ids"])
def test_global_loss_without_grad_gather_has_the_full_gradient_over_world_size(ids) -> None:
    torch.manual_seed(2)
    full = _run(lambda i, t, s: itc_loss(i, t, s, ids))
    torch.manual_seed(2)
    sim = _run(lambda i, t, s: _simulate(i, t, ids, s, local_loss=False, gather_with_grad=False))
    torch.testing.assert_close(sim[0], full[0])
    torch.testing.assert_close(sim[1], full[1] / W)
    torch.testing.assert_close(sim[2], full[2] / W)


def test_local_loss_without_grad_gather_keeps_the_loss_but_only_local_gradient_paths() -> None:
    torch.manual_seed(3)
    full = _run(lambda i, t, s: itc_loss(i, t, s))
    torch.manual_seed(3)
    sim = _run(lambda i, t, s: _simulate(i, t, None, s, local_loss=True, gather_with_grad=False))
    torch.testing.assert_close(sim[0], full[0])
    assert not torch.allclose(sim[1], full[1])

    # reference: rank r's rows against [other rank detached | own features], labels offset by r*B
    def by_hand(image, text, scale):
        total = 0.0
        for r in range(W):
            rows = slice(r * B, (r + 1) * B)
            cols_t = torch.cat([text[rows] if s == r else text[s * B:(s + 1) * B].detach() for s in range(W)])
            cols_i = torch.cat([image[rows] if s == r else image[s * B:(s + 1) * B].detach() for s in range(W)])
            labels = torch.arange(B) + r * B
            total = total + 0.5 * (F.cross_entropy(scale * image[rows] @ cols_t.t(), labels)
                                   + F.cross_entropy(scale * text[rows] @ cols_i.t(), labels))
        return total / W

    torch.manual_seed(3)
    ref = _run(by_hand)
    for a, b in zip(sim, ref):
        torch.testing.assert_close(a, b)


def test_one_rank_is_plain_itc_and_module_needs_a_gather() -> None:
    img, txt = F.normalize(torch.randn(4, 8), dim=-1), F.normalize(torch.randn(4, 8), dim=-1)
    same = gathered_itc_loss(img, txt, 3.0, rank=0, world_size=1, all_gather_fn=lambda t: [t])
    torch.testing.assert_close(same, itc_loss(img, txt, 3.0))
    assert gather_features(img, txt, rank=0, world_size=1, gather_with_grad=False, all_gather_fn=None)[0] is img
    with pytest.raises(ValueError, match="all_gather_fn"):
        ITCLoss(world_size=2)(img, txt, 3.0)


def test_itc_module_two_ranks_matches_function() -> None:
    image, text, _ = _leaves()
    parts = [list(image.detach().chunk(W)), list(text.detach().chunk(W))]
    module = ITCLoss(rank=1, world_size=W, local_loss=True, gather_with_grad=True, all_gather_fn=_fake_gather(1, parts))
    expected = gathered_itc_loss(parts[0][1], parts[1][1], 4.0, rank=1, world_size=W, all_gather_fn=_fake_gather(1, parts),
                                 local_loss=True, gather_with_grad=True)
    torch.testing.assert_close(module(parts[0][1], parts[1][1], 4.0), expected)
