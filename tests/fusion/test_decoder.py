"""CoCa split of the cross-attention decoder and single-stream details the contract does not see."""

from __future__ import annotations

import torch

from vlp.encoders.base import EncoderOutput
from vlp.fusion import (
    CoAttentionConfig,
    CoAttentionFusion,
    CrossAttentionDecoder,
    CrossAttentionDecoderConfig,
    SingleStreamConfig,
    SingleStreamFusion,
)
from vlp.fusion.base import joint_mask

WIDTH, B, L, N = 16, 2, 5, 3
MASK = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])


def _inputs(seed: int = 0) -> tuple[EncoderOutput, EncoderOutput]:
    g = torch.Generator().manual_seed(seed)
    image = EncoderOutput(tokens=torch.randn(B, N, 8, generator=g))
    return image, EncoderOutput(tokens=torch.randn(B, L, WIDTH, generator=g), mask=MASK)


def _coca() -> CrossAttentionDecoder:
    cfg = CrossAttentionDecoderConfig(unimodal_depth=1, multimodal_depth=1, num_heads=2)
    return CrossAttentionDecoder(cfg, image_width=8, text_width=WIDTH).eval()


def test_forward_equals_unimodal_then_decode() -> None:
    """The appended [CLS] changes no text state, so forward may skip it and a model may run both halves."""
    decoder = _coca()
    image, text = _inputs()
    uni = decoder.encode_text_unimodal(text)
    split = decoder.decode(image, uni)
    whole = decoder(image, text)
    torch.testing.assert_close(split.text_tokens, whole.text_tokens)
    torch.testing.assert_close(split.pooled, whole.pooled)
    assert decoder.default_mode == "causal" and uni.tokens.shape == (B, L, WIDTH)


def test_cls_embedding_sees_the_whole_text_but_not_the_image() -> None:
    decoder = _coca()
    image, text = _inputs()
    other_image, _ = _inputs(seed=1)
    pooled = decoder.encode_text_unimodal(text).pooled
    assert pooled is not None and pooled.shape == (B, WIDTH)
    tokens = text.tokens.clone()
    tokens[1, 2] += torch.randn(WIDTH)  # last real token of sample 1
    changed = decoder.encode_text_unimodal(EncoderOutput(tokens=tokens, mask=MASK)).pooled
    assert not torch.allclose(pooled[1], changed[1])  # type: ignore[index]
    # The image only enters the multimodal layers.
    a, b = decoder(image, text), decoder(other_image, text)
    assert not torch.allclose(a.text_tokens, b.text_tokens)  # type: ignore[arg-type]


def test_single_stream_image_first_order_gives_the_same_outputs() -> None:
    """Masks are per modality, so running [image; text] (GIT, VLP) with the permuted mask gives our
    [text; image] outputs: the order is not a config option because it changes nothing."""
    fusion = SingleStreamFusion(SingleStreamConfig(depth=1, num_heads=2), image_width=8, text_width=WIDTH).eval()
    image, text = _inputs()
    prefix = torch.tensor([1, 2])
    out = fusion(image, text, "seq2seq", prefix)
    t = fusion.text_proj(text.tokens) + fusion.type_embeddings.weight[0]
    v = fusion.image_proj(image.tokens) + fusion.type_embeddings.weight[1]
    mask = joint_mask("seq2seq", L, N, MASK, None, prefix, torch.device("cpu"))
    perm = torch.cat([torch.arange(L, L + N), torch.arange(L)])  # [image; text]
    x = fusion.norm(fusion.blocks(torch.cat([t, v], dim=1)[:, perm], attn_mask=mask[..., perm, :][..., perm]))
    torch.testing.assert_close(x[:, N:], out.text_tokens)
    torch.testing.assert_close(x[:, :N], out.image_tokens)


def test_co_attention_updates_both_streams_from_the_other() -> None:
    fusion = CoAttentionFusion(CoAttentionConfig(depth=1, num_heads=2, pool="concat"), 8, WIDTH).eval()
    image, text = _inputs()
    other_image, _ = _inputs(seed=1)
    a, b = fusion(image, text), fusion(other_image, text)
    assert not torch.allclose(a.text_tokens, b.text_tokens)  # type: ignore[arg-type]
    assert a.image_tokens is not None and a.pooled is not None and a.pooled.shape == (B, WIDTH)
