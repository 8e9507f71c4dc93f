"""Contract over the whole FUSIONS registry: shapes, masks, gradients, state dict, determinism.

Every registered kind needs at least one tiny variant below (`test_every_kind_has_a_variant`), so a
new fusion cannot join the registry without passing the contract. The encoder widths differ from
each other and from some fusion widths, so the input projections are exercised too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from vlp.encoders.base import EncoderOutput
from vlp.fusion import (
    ATTENTION_MODES,
    FUSIONS,
    CoAttentionConfig,
    CrossAttentionDecoderConfig,
    CrossAttentionFusionConfig,
    Fusion,
    NoFusionConfig,
    SelfAttentionDecoderConfig,
    SingleStreamConfig,
    UnifiedConfig,
    UnifiedSeq2SeqConfig,
    build_fusion,
)
from vlp.fusion.blip import BLIPTextConfig

B, L, N = 2, 6, 5
IMAGE_WIDTH, TEXT_WIDTH = 24, 16
TEXT_MASK = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
IMAGE_MASK = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])  # padded regions (detector features)
PREFIX = torch.tensor([2, 1])

VARIANTS: list[tuple[str, Callable[[], Any]]] = [
    ("single_stream", lambda: SingleStreamConfig(width=32, depth=2, num_heads=2, dropout=0.1)),
    ("single_stream-vilt", lambda: SingleStreamConfig(depth=1, num_heads=2, norm_first=True, eps=1e-6, pooler=False)),
    ("unified_seq2seq", lambda: UnifiedSeq2SeqConfig(depth=2, num_heads=2, dropout=0.1)),
    ("self_attention_decoder", lambda: SelfAttentionDecoderConfig(width=32, depth=2, num_heads=2, dropout=0.1)),
    ("cross_attention", lambda: CrossAttentionFusionConfig(width=32, depth=2, num_heads=2, pooler=True, dropout=0.1)),
    ("blip_text", lambda: BLIPTextConfig(width=32, depth=2, num_heads=2, dropout=0.1)),
    ("cross_attention-prenorm", lambda: CrossAttentionFusionConfig(depth=1, num_heads=2, norm_first=True, pool="last")),
    (
        "cross_attention_decoder",
        lambda: CrossAttentionDecoderConfig(width=32, unimodal_depth=1, multimodal_depth=1, num_heads=2, dropout=0.1),
    ),
    (
        "cross_attention_decoder-blip",
        lambda: CrossAttentionDecoderConfig(
            unimodal_depth=0, multimodal_depth=2, num_heads=2, cls_token=False, norm_first=False, eps=1e-12
        ),
    ),
    ("co_attention", lambda: CoAttentionConfig(width=32, depth=2, num_heads=2, pool="concat", dropout=0.1)),
    ("co_attention-lxmert", lambda: CoAttentionConfig(depth=1, num_heads=2, pool="text", norm_first=True)),
    ("unified-vlmo", lambda: UnifiedConfig(width=32, depth=2, num_heads=2, experts=True, vl_layers=1, dropout=0.1)),
    ("unified-ufo", lambda: UnifiedConfig(depth=2, num_heads=2)),
]
VARIANT_IDS = [name for name, _ in VARIANTS]


def make(variant: str, seed: int = 0) -> Fusion:
    torch.manual_seed(seed)
    fusion = build_fusion(dict(VARIANTS)[variant](), IMAGE_WIDTH, TEXT_WIDTH)
    assert isinstance(fusion, Fusion)
    return fusion


def cases(kind_filter: Callable[[Fusion], bool] = lambda f: True, modes: tuple[str, ...] = ATTENTION_MODES) -> list:
    """(variant, mode) pairs for the modes each variant supports."""
    out = []
    for variant in VARIANT_IDS:
        fusion = make(variant)
        out += [pytest.param(variant, m, id=f"{variant}-{m}") for m in fusion.modes if m in modes and kind_filter(fusion)]
    return out


def inputs(seed: int = 1, image_padding: bool = True) -> tuple[EncoderOutput, EncoderOutput]:
    g = torch.Generator().manual_seed(seed)
    image = EncoderOutput(tokens=torch.randn(B, N, IMAGE_WIDTH, generator=g), mask=IMAGE_MASK if image_padding else None)
    text = EncoderOutput(tokens=torch.randn(B, L, TEXT_WIDTH, generator=g), mask=TEXT_MASK)
    return image, text


def prefix_for(mode: str) -> torch.Tensor | None:
    return PREFIX if mode == "seq2seq" else None


def all_outputs(fusion: Fusion, image: EncoderOutput, text: EncoderOutput, mode: str) -> list[torch.Tensor]:
    """Everything a model may read: the fused outputs plus the unimodal passes some kinds offer."""
    prefix = prefix_for(mode)
    out = fusion(image, text, mode, prefix)
    tensors = [t for t in (out.text_tokens, out.image_tokens, out.pooled) if t is not None]
    if hasattr(fusion, "encode_image"):
        tensors += [fusion.encode_image(image).tokens, fusion.encode_text(text).tokens]
    elif hasattr(fusion, "encode_text"):  # BLIP: the unimodal text encoder lives in the fusion stack
        tensors.append(fusion.encode_text(text).tokens)
    if fusion.kind == "blip_text":  # encoder and decoder self-attentions: each mode trains one of them
        tensors += [fusion(image, text, other).text_tokens for other in fusion.modes if other != mode]
    if hasattr(fusion, "encode_text_unimodal"):
        tensors.append(fusion.encode_text_unimodal(text, mode, prefix).pooled)
    return tensors


def random_loss(tensors: list[torch.Tensor]) -> torch.Tensor:
    # Random weights: a plain sum of LayerNorm outputs has zero gradient and would hide dead parameters.
    g = torch.Generator().manual_seed(2)
    return sum((t * torch.randn(t.shape, generator=g)).sum() for t in tensors)  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# registry


def test_every_kind_has_a_variant() -> None:
    covered = {name.split("-")[0] for name in VARIANT_IDS}
    assert covered == set(FUSIONS.names()) - {"none"}


@pytest.mark.parametrize("name", FUSIONS.names())
def test_registry_entry_has_config_of_its_kind(name: str) -> None:
    config = FUSIONS.config(name)
    assert config is not None and config().kind == name


def test_none_builds_nothing() -> None:
    assert build_fusion(NoFusionConfig(), IMAGE_WIDTH, TEXT_WIDTH) is None


@pytest.mark.parametrize("variant", VARIANT_IDS)
def test_unsupported_modes_raise_naming_the_kind(variant: str) -> None:
    fusion = make(variant)
    image, text = inputs()
    for mode in set(ATTENTION_MODES) - set(fusion.modes):
        with pytest.raises(ValueError, match=fusion.kind):
            fusion(image, text, mode)
    with pytest.raises(ValueError, match="unknown attention mode"):
        fusion(image, text, "sideways")  # type: ignore[arg-type]
    non_seq2seq = [m for m in fusion.modes if m != "seq2seq"]
    if non_seq2seq:
        with pytest.raises(ValueError, match="prefix_length"):
            fusion(image, text, non_seq2seq[0], PREFIX)


# ---------------------------------------------------------------------------------------------
# per (variant, mode)


@pytest.mark.parametrize(("variant", "mode"), cases())
def test_shapes_and_finite(variant: str, mode: str) -> None:
    fusion = make(variant)
    image, text = inputs()
    out = fusion(image, text, mode, prefix_for(mode))
    assert out.text_tokens is not None and out.text_tokens.shape == (B, L, fusion.width)
    assert out.pooled is not None and out.pooled.shape == (B, fusion.width)
    if out.image_tokens is not None:
        assert out.image_tokens.shape == (B, N, fusion.width)
    for tensor in all_outputs(fusion, image, text, mode):
        assert torch.isfinite(tensor).all()


@pytest.mark.parametrize(("variant", "mode"), cases())
def test_gradient_reaches_every_parameter(variant: str, mode: str) -> None:
    fusion = make(variant)
    image, text = inputs()
    random_loss(all_outputs(fusion, image, text, mode)).backward()
    dead = [n for n, p in fusion.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, f"no gradient for {dead}"


@pytest.mark.parametrize("variant", VARIANT_IDS)
def test_state_dict_round_trip_and_eval_determinism(variant: str) -> None:
    source, target = make(variant, seed=0), make(variant, seed=1)
    target.load_state_dict(source.state_dict())
    source.eval(), target.eval()
    image, text = inputs()
    for mode in source.modes:
        a, b = all_outputs(source, image, text, mode), all_outputs(target, image, text, mode)
        again = all_outputs(source, image, text, mode)
        for x, y, z in zip(a, b, again):
            torch.testing.assert_close(x, y, rtol=0, atol=0)
            torch.testing.assert_close(x, z, rtol=0, atol=0)


@pytest.mark.parametrize("variant", VARIANT_IDS)
def test_grad_checkpointing_keeps_outputs_and_gradients(variant: str) -> None:
    fusion = make(variant)  # dropout stays on: non-reentrant checkpointing replays the RNG
    image, text = inputs()
    mode = fusion.default_mode

    def run() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        fusion.zero_grad()
        torch.manual_seed(3)
        outs = all_outputs(fusion, image, text, mode)
        random_loss(outs).backward()
        return [o.detach() for o in outs], [p.grad.clone() for p in fusion.parameters()]  # type: ignore[union-attr]

    plain_out, plain_grad = run()
    fusion.set_grad_checkpointing(True)
    assert any(getattr(m, "grad_checkpointing", False) for m in fusion.modules())
    ckpt_out, ckpt_grad = run()
    for x, y in zip(plain_out + plain_grad, ckpt_out + ckpt_grad):
        torch.testing.assert_close(x, y)


# ---------------------------------------------------------------------------------------------
# masks, observed from the outside


def _perturb_text(text: EncoderOutput, position: int) -> EncoderOutput:
    tokens = text.tokens.clone()
    # A random direction: a constant shift of all features would be removed by LayerNorm.
    tokens[:, position] += 3.0 * torch.randn(tokens.shape[-1], generator=torch.Generator().manual_seed(7))
    return EncoderOutput(tokens=tokens, mask=text.mask)


@pytest.mark.parametrize(("variant", "mode"), cases(modes=("causal", "seq2seq")))
def test_later_text_never_reaches_earlier_text_or_image(variant: str, mode: str) -> None:
    fusion = make(variant).eval()
    image, text = inputs()
    prefix = prefix_for(mode)
    position = 3  # beyond both prefixes [2, 1] and real in both samples
    before = fusion(image, text, mode, prefix)
    after = fusion(image, _perturb_text(text, position), mode, prefix)
    torch.testing.assert_close(before.text_tokens[:, :position], after.text_tokens[:, :position])  # type: ignore[index]
    assert not torch.allclose(before.text_tokens[:, position], after.text_tokens[:, position])  # type: ignore[index]
    if before.image_tokens is not None:
        torch.testing.assert_close(before.image_tokens, after.image_tokens)
    if hasattr(fusion, "encode_text_unimodal"):
        uni_before = fusion.encode_text_unimodal(text, mode, prefix).tokens
        uni_after = fusion.encode_text_unimodal(_perturb_text(text, position), mode, prefix).tokens
        torch.testing.assert_close(uni_before[:, :position], uni_after[:, :position])


@pytest.mark.parametrize(("variant", "mode"), cases(modes=("seq2seq",)))
def test_prefix_tokens_see_each_other(variant: str, mode: str) -> None:
    fusion = make(variant).eval()
    image, text = inputs()
    prefix = torch.tensor([3, 3])
    before = fusion(image, text, mode, prefix)
    after = fusion(image, _perturb_text(text, 2), mode, prefix)
    assert not torch.allclose(before.text_tokens[:, 0], after.text_tokens[:, 0])  # type: ignore[index]
    if before.image_tokens is not None:  # the image belongs to the prefix and sees the text prefix
        assert not torch.allclose(before.image_tokens, after.image_tokens)
    # ...and with prefix 0 (VLP captioning), the same change is invisible to earlier tokens.
    zero = torch.tensor([0, 0])
    before = fusion(image, text, mode, zero)
    after = fusion(image, _perturb_text(text, 2), mode, zero)
    torch.testing.assert_close(before.text_tokens[:, :2], after.text_tokens[:, :2])  # type: ignore[index]


@pytest.mark.parametrize(("variant", "mode"), cases())
@pytest.mark.parametrize("padded", ["text", "image"])
def test_padding_content_does_not_matter(variant: str, mode: str, padded: str) -> None:
    fusion = make(variant).eval()
    image, text = inputs()
    prefix = prefix_for(mode)
    g = torch.Generator().manual_seed(5)
    if padded == "text":
        tokens = text.tokens.clone()
        tokens[TEXT_MASK == 0] = 100 * torch.randn(int((TEXT_MASK == 0).sum()), TEXT_WIDTH, generator=g)
        image2, text2 = image, EncoderOutput(tokens=tokens, mask=TEXT_MASK)
    else:
        tokens = image.tokens.clone()
        tokens[IMAGE_MASK == 0] = 100 * torch.randn(int((IMAGE_MASK == 0).sum()), IMAGE_WIDTH, generator=g)
        image2, text2 = EncoderOutput(tokens=tokens, mask=IMAGE_MASK), text
    a, b = fusion(image, text, mode, prefix), fusion(image2, text2, mode, prefix)
    real_text, real_image = TEXT_MASK.bool(), IMAGE_MASK.bool()
    torch.testing.assert_close(a.text_tokens[real_text], b.text_tokens[real_text])  # type: ignore[index]
    torch.testing.assert_close(a.pooled, b.pooled)
    if a.image_tokens is not None:
        torch.testing.assert_close(a.image_tokens[real_image], b.image_tokens[real_image])  # type: ignore[index]
    if hasattr(fusion, "encode_image"):
        torch.testing.assert_close(fusion.encode_image(image).tokens[real_image], fusion.encode_image(image2).tokens[real_image])
        torch.testing.assert_close(fusion.encode_text(text).tokens[real_text], fusion.encode_text(text2).tokens[real_text])
    if hasattr(fusion, "encode_text_unimodal"):
        torch.testing.assert_close(
            fusion.encode_text_unimodal(text, mode, prefix).pooled, fusion.encode_text_unimodal(text2, mode, prefix).pooled
        )


@pytest.mark.parametrize(("variant", "mode"), cases())
def test_left_padding_gives_no_nan(variant: str, mode: str) -> None:
    """A padded query under a causal mask has no visible key but itself; SDPA would return NaN."""
    fusion = make(variant).eval()
    image, text = inputs()
    left = EncoderOutput(tokens=text.tokens, mask=TEXT_MASK.flip(1))
    for tensor in all_outputs(fusion, image, left, mode):
        assert torch.isfinite(tensor).all()
