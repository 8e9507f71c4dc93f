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


def test_single_stream_git_options_project_with_a_norm_and_add_no_type_embeddings() -> None:
    """GIT's decoder: image tokens through Linear + LayerNorm even at equal widths, no modality embeddings."""
    cfg = SingleStreamConfig(depth=1, num_heads=2, type_embeddings=False, image_proj_norm_eps=1e-5, default_mode="causal")
    fusion = SingleStreamFusion(cfg, image_width=WIDTH, text_width=WIDTH).eval()
    assert fusion.type_embeddings is None and fusion.no_weight_decay() == set()
    assert [type(m) for m in fusion.image_proj] == [torch.nn.Linear, torch.nn.LayerNorm]
    assert fusion.image_proj[1].eps == 1e-5
    g = torch.Generator().manual_seed(2)
    image = EncoderOutput(tokens=torch.randn(B, N, WIDTH, generator=g))
    text = EncoderOutput(tokens=torch.randn(B, L, WIDTH, generator=g), mask=MASK)
    out = fusion(image, text)
    v = torch.nn.functional.layer_norm(fusion.image_proj[0](image.tokens), (WIDTH,), fusion.image_proj[1].weight, fusion.image_proj[1].bias, 1e-5)
    mask = joint_mask("causal", L, N, MASK, None, None, torch.device("cpu"))
    x = fusion.blocks(torch.cat([text.tokens, v], dim=1), attn_mask=mask)  # no type embeddings added
    torch.testing.assert_close(out.text_tokens, x[:, :L])
    default = SingleStreamFusion(SingleStreamConfig(depth=1, num_heads=2), image_width=WIDTH, text_width=WIDTH)
    assert isinstance(default.image_proj, torch.nn.Identity) and default.type_embeddings is not None
