"""The fast ITM path (`pool` with each distinct image once + last layer on the pooled row,
`itm_pair_scores` in image order with trimmed padding) against the plain per-pair path
(`fuse(image.select(index), text)` + `itm_logits`), fp32, random init, fixed seeds."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from vlp.adapt.retrieval import GalleryFeatures, itm_pair_scores, trim_padding
from vlp.encoders import EncoderOutput
from vlp.fusion import BLIPTextConfig, BLIPTextTransformer, CrossAttentionFusion, CrossAttentionFusionConfig
from vlp.layers import CrossAttention, LayerCache, SelfAttention, TransformerBlock
from vlp.layers.shared_context import shared_context_attention, worth_grouping
from vlp.models import build_model, model_preset


def _model(family: str):
    cfg = model_preset(f"{family}_tiny")
    torch.manual_seed(0)
    return build_model(replace(cfg, text_encoder=replace(cfg.text_encoder, vocab_size=90))).eval()


def _padded_text(batch: int, length: int, width: int, generator: torch.Generator) -> EncoderOutput:
    """Random states with right padding of random length (every row keeps >= 2 real tokens)."""
    real = torch.randint(2, length + 1, (batch,), generator=generator)
    mask = (torch.arange(length)[None, :] < real[:, None]).long()
    return EncoderOutput(tokens=torch.randn(batch, length, width, generator=generator), mask=mask)


def _image(count: int, tokens: int, width: int, generator: torch.Generator, masked: bool) -> EncoderOutput:
    mask = None
    if masked:  # region-style: a different number of real tokens per image
        real = torch.randint(1, tokens + 1, (count,), generator=generator)
        mask = (torch.arange(tokens)[None, :] < real[:, None]).long()
    return EncoderOutput(tokens=torch.randn(count, tokens, width, generator=generator), mask=mask)


def _old_pooled(fusion, image: EncoderOutput, text: EncoderOutput, index: torch.Tensor) -> torch.Tensor:
    return fusion(image.select(index), text, mode="bidirectional").pooled


FUSIONS = {
    "blip": lambda: BLIPTextTransformer(BLIPTextConfig(width=32, depth=2, num_heads=4), image_width=24, text_width=32),
    "albef": lambda: CrossAttentionFusion(CrossAttentionFusionConfig(width=32, depth=2, num_heads=4), image_width=24, text_width=32),
    "albef_prenorm_pooler_last": lambda: CrossAttentionFusion(
        CrossAttentionFusionConfig(width=32, depth=3, num_heads=4, norm_first=True, pooler=True, pool="last", eps=1e-6),
        image_width=24, text_width=32,
    ),
}


@pytest.mark.parametrize("pairs", [10, 40])  # 40 pairs of 3 images: attention stacked per image (worth_grouping)
@pytest.mark.parametrize("masked_image", [False, True])
@pytest.mark.parametrize("name", list(FUSIONS))
def test_pool_with_shared_images_equals_per_pair_fusion(name: str, masked_image: bool, pairs: int) -> None:
    torch.manual_seed(0)
    fusion = FUSIONS[name]().eval()
    generator = torch.Generator().manual_seed(1)
    image = _image(3, 7, 24, generator, masked_image)
    text = _padded_text(pairs, 9, 32, generator)
    index = torch.tensor([0, 0, 0, 2, 2, 1, 0, 2, 1, 1]).repeat(pairs // 10)  # unsorted, repeated: any pairing works
    with torch.no_grad():
        old = _old_pooled(fusion, image, text, index)
        new = fusion.pool(image, text, mode="bidirectional", image_index=index)
        per_row = fusion.pool(image.select(index), text, mode="bidirectional")  # no index: row b with row b
    assert new.shape == old.shape == (pairs, 32)
    torch.testing.assert_close(new, old, atol=1e-5, rtol=0)
    torch.testing.assert_close(per_row, old, atol=1e-5, rtol=0)
    assert old.std(dim=0).mean() > 1e-3  # pooled states differ across pairs


@pytest.mark.parametrize("family", ["blip", "albef", "vilt", "vlmo"])  # own `pool` (blip, albef) or the default
def test_model_itm_pair_logits_equals_fuse_then_head(family: str) -> None:
    model = _model(family)
    generator = torch.Generator().manual_seed(2)
    pixels = torch.randn(3, 3, 32, 32, generator=generator)
    ids = torch.randint(5, 90, (8, 12), generator=generator)
    mask = torch.ones_like(ids)
    mask[::2, 7:] = 0
    with torch.no_grad():
        _, image = model.image_pair_features(pixels, unimodal=False)
        _, text = model.text_pair_features(ids, mask, unimodal=False)
        index = torch.tensor([2, 0, 0, 1, 2, 2, 0, 1])
        old = model.itm_logits(model.fuse(image.select(index), text, mode="bidirectional"))
        new = model.itm_pair_logits(image, text, index)
    torch.testing.assert_close(new, old, atol=1e-5, rtol=0)


def _old_pair_scores(model, features: GalleryFeatures, images: torch.Tensor, texts: torch.Tensor, batch: int) -> torch.Tensor:
    """The per-pair path itm_pair_scores replaced: every pair carries its own copy of its image."""
    out = []
    for s in range(0, images.shape[0], batch):
        fused = model.fuse(features.image_for_fusion.select(images[s : s + batch]), features.text_for_fusion.select(texts[s : s + batch]), mode="bidirectional")
        out.append(model.itm_logits(fused)[:, 1])
    return torch.cat(out)


@pytest.mark.parametrize("family", ["blip", "albef"])
def test_itm_pair_scores_equal_the_per_pair_path(family: str) -> None:
    model = _model(family)
    generator = torch.Generator().manual_seed(4)
    ni, nt = 4, 12
    pixels = torch.randn(ni, 3, 32, 32, generator=generator)
    ids = torch.randint(5, 90, (nt, 16), generator=generator)
    lengths = torch.randint(3, 12, (nt,), generator=generator)  # all rows shorter than 16: trimming bites
    mask = (torch.arange(16)[None, :] < lengths[:, None]).long()
    with torch.no_grad():
        _, image = model.image_pair_features(pixels, unimodal=False)
        _, text = model.text_pair_features(ids, mask, unimodal=False)
    features = GalleryFeatures(torch.arange(ni), [""] * nt, torch.arange(nt) // 3, image, text, None, None)
    images = torch.randint(0, ni, (40,), generator=generator)  # random order: itm_pair_scores sorts
    texts = torch.randint(0, nt, (40,), generator=generator)
    with torch.no_grad():
        old = _old_pair_scores(model, features, images, texts, batch=7)
    for batch in (1, 7, 64):  # 64: one batch, 40 pairs of <= 4 images, attention stacked per image
        new = itm_pair_scores(model, features, images, texts, batch_size=batch)
        torch.testing.assert_close(new, old, atol=1e-5, rtol=0)
    prob = itm_pair_scores(model, features, images, texts, batch_size=7, itm_score="prob")
    with torch.no_grad():
        fused = model.fuse(image.select(images), text.select(texts), mode="bidirectional")
        torch.testing.assert_close(prob, model.itm_logits(fused).softmax(-1)[:, 1], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="two \\[P\\] tensors"):
        itm_pair_scores(model, features, images, texts[:-1])


def test_trim_padding_drops_only_trailing_all_padding_columns() -> None:
    tokens = torch.randn(3, 6, 4)
    mask = torch.tensor([[1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0], [0, 1, 1, 0, 0, 0]])
    out = trim_padding(EncoderOutput(tokens=tokens, mask=mask))
    assert out.tokens.shape == (3, 3, 4) and torch.equal(out.mask, mask[:, :3]) and torch.equal(out.tokens, tokens[:, :3])
    full = EncoderOutput(tokens=tokens, mask=torch.ones(3, 6, dtype=torch.long))
    assert trim_padding(full) is full
    unmasked = EncoderOutput(tokens=tokens)
    assert trim_padding(unmasked) is unmasked


@pytest.mark.parametrize("norm_first", [True, False])
def test_block_rows_equal_the_full_block_at_those_rows(norm_first: bool) -> None:
    torch.manual_seed(5)
    block = TransformerBlock(16, 4, norm_first=norm_first, cross_attention=True).eval()
    x, context = torch.randn(3, 6, 16), torch.randn(2, 5, 16)
    context_index = torch.tensor([1, 0, 1])
    mask = torch.ones(3, 1, 6, 6, dtype=torch.bool)
    mask[0, :, :, 4:] = False
    rows = torch.tensor([[0, 3], [5, 1], [2, 2]])  # per-sample positions, repeats allowed
    with torch.no_grad():
        full = block(x, mask, context.index_select(0, context_index))
        picked = block(x, mask, context, context_index=context_index, rows=rows)
    torch.testing.assert_close(picked, torch.take_along_dim(full, rows[..., None], dim=1), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="rows and cache"):
        block(x, mask, context, cache=LayerCache(), rows=rows)


def test_self_attention_queries_equal_the_full_output_rows() -> None:
    torch.manual_seed(6)
    attn = SelfAttention(16, 2).eval()
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        full = attn(x)
        first = attn(x, queries=x[:, :1])
    torch.testing.assert_close(first, full[:, :1], atol=1e-6, rtol=0)


@pytest.mark.parametrize("mask_shape", [None, (24, 1, 1, 6), (1, 1, 5, 6), (24, 1, 5, 6)])
@pytest.mark.parametrize("ordered", [True, False])
def test_shared_context_attention_equals_gathered_attention(mask_shape, ordered: bool) -> None:
    generator = torch.Generator().manual_seed(7)
    q = torch.randn(24, 2, 5, 8, generator=generator)
    k, v = torch.randn(4, 2, 6, 8, generator=generator), torch.randn(4, 2, 6, 8, generator=generator)
    index = torch.tensor([0, 0, 0, 2, 2, 3] * 4)  # context 1 unused: an empty group
    if not ordered:
        index = index[torch.randperm(24, generator=generator)]
    mask = None if mask_shape is None else torch.rand(mask_shape, generator=generator) > 0.3
    if mask is not None:
        mask[..., 0] = True  # every query sees at least one key
    reference = torch.nn.functional.scaled_dot_product_attention(q, k[index], v[index], attn_mask=mask)
    torch.testing.assert_close(shared_context_attention(q, k, v, mask, index), reference, atol=1e-6, rtol=0)


def test_cross_attention_context_index_paths_agree() -> None:
    torch.manual_seed(8)
    attn = CrossAttention(16, 4, context_dim=12).eval()
    x, context = torch.randn(32, 3, 16), torch.randn(4, 5, 12)
    few = torch.arange(32) % 2  # 2 contexts for 32 rows: stacked per context
    many = torch.arange(32) % 4  # 4 contexts, 8 rows each: still stacked
    assert worth_grouping(32, 2) and not worth_grouping(32, 5)
    with torch.no_grad():
        for index in (few, many, torch.arange(4).repeat_interleave(8)):
            torch.testing.assert_close(attn(x, context, context_index=index), attn(x, context[index]), atol=1e-6, rtol=0)
        rows_each = torch.arange(4)  # 4 rows, 4 contexts: gathered per row
        torch.testing.assert_close(attn(x[:4], context, context_index=rows_each), attn(x[:4], context), atol=1e-6, rtol=0)
