import torch

from vlp.layers import TransformerBlock, Transformer, causal_mask, padding_mask, seq2seq_mask


def test_causal_mask_lets_no_token_see_a_later_one() -> None:
    mask = causal_mask(5)[0, 0]
    assert mask.shape == (5, 5)
    assert not mask.triu(1).any()
    assert mask[torch.ones(5, 5, dtype=torch.bool).tril()].all()


def test_seq2seq_mask_prefix_visible_text_causal() -> None:
    prefix, length = torch.tensor([3, 1]), 6
    mask = seq2seq_mask(prefix, length)[:, 0]
    for b, p in enumerate(prefix.tolist()):
        for i in range(length):
            for j in range(length):
                expected = j < p or j <= i
                assert bool(mask[b, i, j]) == expected, (b, i, j)
        # no text token (position >= prefix) sees a later one
        text_rows = mask[b, p:, :]
        later = torch.arange(length)[None, :] > torch.arange(p, length)[:, None]
        assert not (text_rows & later).any()


def test_padding_mask_makes_outputs_independent_of_padding_content() -> None:
    block = Transformer([TransformerBlock(16, 2, norm_first=False), TransformerBlock(16, 2)]).eval()
    x = torch.randn(2, 6, 16)
    keep = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    y = x.clone()
    y[0, 4:] = torch.randn(2, 16) * 100  # change only what padding holds
    out_x = block(x, attn_mask=padding_mask(keep))
    out_y = block(y, attn_mask=padding_mask(keep))
    torch.testing.assert_close(out_x[0, :4], out_y[0, :4])
    torch.testing.assert_close(out_x[1], out_y[1])


def test_grad_checkpointing_does_not_change_outputs_or_grads() -> None:
    stack = Transformer([TransformerBlock(16, 2) for _ in range(2)])
    x = torch.randn(2, 5, 16, requires_grad=True)
    out = stack(x)
    out.sum().backward()
    grad = x.grad.clone()
    x.grad = None
    stack.grad_checkpointing = True
    out2 = stack(x)
    out2.sum().backward()
    torch.testing.assert_close(out, out2)
    torch.testing.assert_close(grad, x.grad)
