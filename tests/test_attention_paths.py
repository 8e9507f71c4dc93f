"""The explicit CPU attention path against SDPA (the plain reference), and the routing rule."""

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from vlp.layers.attention import EXPLICIT_MAX_SCORES, CrossAttention, SelfAttention, attend, explicit_attention, takes_explicit_path
from vlp.layers.masks import causal_mask, padding_mask


def _qkv(queries: int, keys: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(3, 2, n, 8, generator=g, dtype=torch.float64, requires_grad=True) for n in (queries, keys, keys))  # type: ignore[return-value]


def _padding(keys: int, lengths: list[int]) -> torch.Tensor:
    return padding_mask((torch.arange(keys)[None] < torch.tensor(lengths)[:, None]).long())


@pytest.mark.parametrize(
    "queries,keys,mask",
    [
        (5, 5, None),
        (5, 5, "padding"),
        (5, 5, "causal+padding"),
        (4, 7, "padding"),  # cross-attention: queries and keys differ
        (5, 5, "empty rows"),  # some query rows see no key at all
        (5, 5, "float"),
    ],
)
def test_explicit_attention_matches_sdpa_values_and_grads(queries: int, keys: int, mask: str | None) -> None:
    attn_mask = None
    if mask == "padding":
        attn_mask = _padding(keys, [keys, 3, 1])
    elif mask == "causal+padding":
        attn_mask = causal_mask(keys) & _padding(keys, [keys, 3, 1])
    elif mask == "empty rows":
        attn_mask = torch.ones(3, 1, queries, keys, dtype=torch.bool)
        attn_mask[0, 0, 2] = False
        attn_mask[2, 0, :, :] = False
    elif mask == "float":
        attn_mask = torch.randn(3, 1, queries, keys, dtype=torch.float64)
    q, k, v = _qkv(queries, keys)
    grad_out = torch.randn(3, 2, queries, 8, dtype=torch.float64)
    results = []
    for math_only in (False, True):  # float64 reference: SDPA's math backend (its CPU flash kernel is off by ~1e-7)
        with sdpa_kernel(SDPBackend.MATH):
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask) if math_only else explicit_attention(q, k, v, attn_mask)
        results.append((out, torch.autograd.grad(out, (q, k, v), grad_out)))
    (ours, our_grads), (ref, ref_grads) = results
    assert torch.isfinite(ours).all()
    torch.testing.assert_close(ours, ref)
    for mine, theirs in zip(our_grads, ref_grads, strict=True):
        assert torch.isfinite(mine).all()
        torch.testing.assert_close(mine, theirs)
    if mask == "empty rows":
        assert ours[2].abs().max() == 0 and ours[0, :, 2].abs().max() == 0


def test_routing_rule_keeps_sdpa_for_long_sequences_single_queries_and_cuda() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert takes_explicit_path(cpu, 40, 65)
    assert takes_explicit_path(cpu, 80, 80) == (80 * 80 <= EXPLICIT_MAX_SCORES)
    assert not takes_explicit_path(cpu, 197, 197)  # ViT-B/16 length: flash kernel
    assert not takes_explicit_path(cpu, 1, 40)  # one-query decoding step
    assert not takes_explicit_path(cuda, 40, 40)


def test_attend_routes_both_ways_to_the_same_result() -> None:
    short_q, short_k, short_v = _qkv(6, 6)
    long_q, long_k, long_v = _qkv(EXPLICIT_MAX_SCORES // 8 + 1, 8)
    for q, k, v in ((short_q, short_k, short_v), (long_q, long_k, long_v)):
        mask = _padding(k.shape[-2], [k.shape[-2], 4, 2])
        torch.testing.assert_close(attend(q, k, v, mask), F.scaled_dot_product_attention(q, k, v, attn_mask=mask))


def test_attention_dropout_is_applied_in_training_only() -> None:
    torch.manual_seed(0)
    layer = SelfAttention(16, 2, dropout=0.5)
    cross = CrossAttention(16, 2, dropout=0.5)
    x, context = torch.randn(2, 5, 16), torch.randn(2, 7, 16)
    layer.train(), cross.train()
    assert not torch.equal(layer(x), layer(x))
    assert not torch.equal(cross(x, context), cross(x, context))
    layer.eval(), cross.eval()
    assert torch.equal(layer(x), layer(x))
    assert torch.equal(cross(x, context), cross(x, context))


def test_explicit_attention_under_bf16_autocast_stays_close_to_sdpa() -> None:
    q, k, v = (t.detach().float() for t in _qkv(6, 9))
    mask = _padding(9, [9, 5, 2])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = explicit_attention(q, k, v, mask)
        ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert ours.dtype == ref.dtype == torch.bfloat16
    torch.testing.assert_close(ours.float(), ref.float(), atol=2e-2, rtol=2e-2)
