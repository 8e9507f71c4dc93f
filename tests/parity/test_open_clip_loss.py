"""Parity with open_clip's ClipLoss (test-only dependency ``open-clip-torch``)."""

import pytest
import torch
import torch.distributed
import torch.distributed.nn
import torch.nn.functional as F

from vlp.objectives import gathered_itc_loss, itc_loss

open_clip_loss = pytest.importorskip("open_clip.loss")

W, B, E = 2, 4, 16


def _features(n: int = B * W):
    torch.manual_seed(0)
    return F.normalize(torch.randn(n, E), dim=-1), F.normalize(torch.randn(n, E), dim=-1), torch.tensor(14.3)


def _loss_and_grads(fn, image, text, scale):
    leaves = [x.clone().requires_grad_() for x in (image, text, scale)]
    loss = fn(*leaves)
    loss.backward()
    return [loss.detach()] + [leaf.grad for leaf in leaves]


def test_in_batch_itc_equals_clip_loss_in_value_and_gradients() -> None:
    image, text, scale = _features()
    ours = _loss_and_grads(itc_loss, image, text, scale)
    theirs = _loss_and_grads(open_clip_loss.ClipLoss(), image, text, scale)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("gather_with_grad", [False, True])
@pytest.mark.parametrize("local_loss", [False, True])
def test_fake_two_rank_loss_equals_clip_loss_with_patched_collectives(monkeypatch, local_loss, gather_with_grad) -> None:
    image, text, scale = _features()
    img_parts, txt_parts = image.chunk(W), text.chunk(W)

    def others(tensor: torch.Tensor, rank: int) -> list[torch.Tensor]:
        parts = img_parts if torch.equal(tensor, img_parts[rank]) else txt_parts
        return [tensor if s == rank else parts[s] for s in range(W)]

    for rank in range(W):
        def dist_all_gather(out, tensor, *args, **kwargs):  # open_clip's no-grad path fills a list in place
            with torch.no_grad():
                for slot, part in zip(out, others(tensor, rank)):
                    slot.copy_(part)

        monkeypatch.setattr(torch.distributed, "all_gather", dist_all_gather)
        monkeypatch.setattr(torch.distributed.nn, "all_gather", lambda tensor, *a, **k: tuple(others(tensor, rank)))
        theirs = open_clip_loss.ClipLoss(local_loss=local_loss, gather_with_grad=gather_with_grad, rank=rank, world_size=W)
        expected = theirs(img_parts[rank], txt_parts[rank], scale)
        ours = gathered_itc_loss(
            img_parts[rank], txt_parts[rank], scale, rank=rank, world_size=W,
            all_gather_fn=lambda t: others(t, rank), local_loss=local_loss, gather_with_grad=gather_with_grad,
        )
        torch.testing.assert_close(ours, expected)
