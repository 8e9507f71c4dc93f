"""Named model presets: Python functions returning configs (never YAML), registered by name.

Every family of the lecture comes in three sizes, registered as ``<family>_<size>``:
  tiny   tests (seconds on CPU: width 32, one or two layers, 32-pixel images)
  small  CPU demos on the 64-pixel scenes (width 128)
  base   the published dimensions (built only when asked; never in tests)
Each preset reproduces the *structure* of its paper -- which image encoder, text encoder and fusion,
and which heads -- so a new combination is a config change, not new model code. Objectives that
come with each family live in `vlp.experiment.presets`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vlp.encoders import CNNGridConfig, PatchEncoderConfig, RegionEncoderConfig, TextTransformerConfig, ViTConfig
from vlp.fusion import (
    BLIPTextConfig,
    CoAttentionConfig,
    CrossAttentionDecoderConfig,
    CrossAttentionFusionConfig,
    SelfAttentionDecoderConfig,
    SingleStreamConfig,
    UnifiedConfig,
    UnifiedSeq2SeqConfig,
)
from vlp.models.image_text import HeadsConfig, ModelConfig
from vlp.registry import Registry

MODEL_PRESETS: Registry = Registry("model preset")
SIZES = ("tiny", "small", "base")


@dataclass(frozen=True)
class Dims:
    """The numbers a size fixes; families combine them into encoders and fusions."""

    image_size: int
    patch_size: int
    width: int
    heads: int
    image_depth: int
    text_depth: int
    fusion_depth: int
    vocab_size: int | None  # None: the tokenizer decides (tiny/small); base: the published vocabulary
    max_length: int
    embed_dim: int
    region_dim: int
    cnn: str
    cnn_stages: int


DIMS = {
    "tiny": Dims(32, 8, 32, 2, 1, 1, 1, None, 32, 32, 256, "resnet18", 3),
    "small": Dims(64, 8, 128, 4, 4, 4, 2, None, 40, 128, 256, "resnet18", 3),
    "base": Dims(224, 16, 768, 12, 12, 12, 6, 30522, 512, 256, 2048, "resnet50", 4),
}


def _vit(d: Dims, **kw) -> ViTConfig:
    return ViTConfig(image_size=d.image_size, patch_size=d.patch_size, width=d.width, depth=d.image_depth, num_heads=d.heads, **kw)


def _text(d: Dims, depth: int | None = None, **kw) -> TextTransformerConfig:
    params = dict(vocab_size=d.vocab_size, max_length=d.max_length, width=d.width, depth=d.text_depth if depth is None else depth, num_heads=d.heads)
    params.update(kw)
    return TextTransformerConfig(**params)


def _embeddings_only(d: Dims, **kw) -> TextTransformerConfig:
    """Token + position embeddings feeding a fusion that does all the text work (ViLT, UNITER, GIT...)."""
    return _text(d, depth=0, **kw)


def _region(d: Dims, depth: int = 0) -> RegionEncoderConfig:
    return RegionEncoderConfig(feature_dim=d.region_dim, width=d.width, depth=depth, num_heads=d.heads)


def clip(d: Dims) -> ModelConfig:
    """CLIP (Radford et al. 2021): ViT + causal pre-norm text transformer pooled at [EOS]; ITC only."""
    text_width = 512 if d.width == 768 else d.width
    text = _text(d, causal=True, norm_first=True, eps=1e-5, width=text_width, num_heads=8 if d.width == 768 else d.heads)
    if d.width == 768:  # ViT-B/16 CLIP: 49408 BPE tokens, 77 positions, 512-d joint space
        text = _text(d, causal=True, norm_first=True, eps=1e-5, width=512, num_heads=8, vocab_size=49408, max_length=77)
    return ModelConfig(image_encoder=_vit(d), text_encoder=text, embed_dim=512 if d.width == 768 else d.embed_dim)


def albef(d: Dims) -> ModelConfig:
    """ALBEF (Li et al. 2021): ViT, BERT's first half as text encoder, second half as cross-attention fusion."""
    half = max(1, d.text_depth // 2)
    return ModelConfig(
        image_encoder=_vit(d),
        text_encoder=_text(d, depth=half),
        fusion=CrossAttentionFusionConfig(depth=half, num_heads=d.heads),
        heads=HeadsConfig(itm=True, mlm=True),
        embed_dim=d.embed_dim,
    )


def blip(d: Dims) -> ModelConfig:
    """BLIP (Li et al. 2022): ViT + one BERT stack serving as ITC text encoder, image-grounded ITM
    encoder and (with its own causal self-attention, everything else shared) the LM decoder."""
    return ModelConfig(
        image_encoder=_vit(d),
        text_encoder=_embeddings_only(d),
        fusion=BLIPTextConfig(depth=d.text_depth, num_heads=d.heads),
        heads=HeadsConfig(itm=True, lm=True),
        embed_dim=d.embed_dim,
    )


def vilt(d: Dims) -> ModelConfig:
    """ViLT (Kim et al. 2021): one patch-projection conv, word embeddings, deep pre-norm single stream."""
    size, patch = (384, 32) if d.width == 768 else (d.image_size, d.patch_size)
    return ModelConfig(
        image_encoder=PatchEncoderConfig(image_size=size, patch_size=patch, width=d.width),
        text_encoder=_embeddings_only(d, max_length=40 if d.width == 768 else d.max_length),
        fusion=SingleStreamConfig(depth=d.text_depth if d.width == 768 else d.image_depth, num_heads=d.heads, norm_first=True, eps=1e-6),
        heads=HeadsConfig(itm=True, mlm=True),
        contrastive=False,
    )


def _single_stream_regions(d: Dims, vocab: int | None = None) -> ModelConfig:
    return ModelConfig(
        image_encoder=_region(d),
        text_encoder=_embeddings_only(d, vocab_size=vocab or d.vocab_size),
        fusion=SingleStreamConfig(depth=d.text_depth if d.width == 768 else d.image_depth, num_heads=d.heads),
        heads=HeadsConfig(itm=True, mlm=True),
        contrastive=False,
    )


def uniter(d: Dims) -> ModelConfig:
    """UNITER (Chen et al. 2020): region features + word embeddings, one post-norm single stream."""
    return _single_stream_regions(d, 28996 if d.width == 768 else None)  # bert-base-cased vocabulary


def oscar(d: Dims) -> ModelConfig:
    """OSCAR (Li et al. 2020): UNITER's structure, with detected object tags as a second text segment."""
    return _single_stream_regions(d)


def visualbert(d: Dims) -> ModelConfig:
    """VisualBERT (Li et al. 2019): BERT over [text; region features]."""
    return _single_stream_regions(d)


def lxmert(d: Dims) -> ModelConfig:
    """LXMERT (Tan & Bansal 2019): 9 language layers, 5 object-relationship layers over the region
    embeddings, 5 co-attention (cross-modality) layers."""
    text_depth, region_depth, fusion_depth = (9, 5, 5) if d.width == 768 else (d.text_depth, d.fusion_depth, d.fusion_depth)
    return ModelConfig(
        image_encoder=_region(d, depth=region_depth),
        text_encoder=_text(d, depth=text_depth),
        fusion=CoAttentionConfig(depth=fusion_depth, num_heads=d.heads),
        heads=HeadsConfig(itm=True, mlm=True),
        contrastive=False,
    )


def meter(d: Dims) -> ModelConfig:
    """METER (Dou et al. 2022): CLIP-ViT + RoBERTa-style text encoder + co-attention, both [CLS] pooled."""
    text = _text(d, vocab_size=50265 if d.width == 768 else None, max_length=514 if d.width == 768 else d.max_length)
    return ModelConfig(
        image_encoder=_vit(d),
        text_encoder=text,
        fusion=CoAttentionConfig(depth=d.fusion_depth, num_heads=d.heads, pool="concat"),
        heads=HeadsConfig(itm=True, mlm=True),
        contrastive=False,
    )


def pixelbert(d: Dims) -> ModelConfig:
    """Pixel-BERT (Huang et al. 2020): ResNet feature-map pixels as tokens into a BERT single stream."""
    return ModelConfig(
        image_encoder=CNNGridConfig(depth_name=d.cnn, stages=d.cnn_stages, image_size=d.image_size, width=d.width),
        text_encoder=_embeddings_only(d),
        fusion=SingleStreamConfig(depth=d.text_depth if d.width == 768 else d.image_depth, num_heads=d.heads),
        heads=HeadsConfig(itm=True, mlm=True),
        contrastive=False,
    )


def git(d: Dims) -> ModelConfig:
    """GIT (Wang et al. 2022): image encoder + self-attention decoder over [image; text], LM only."""
    return ModelConfig(
        image_encoder=_vit(d),
        text_encoder=_embeddings_only(d, max_length=1024 if d.width == 768 else d.max_length),
        fusion=SelfAttentionDecoderConfig(depth=d.fusion_depth, num_heads=d.heads),
        heads=HeadsConfig(lm=True),
        contrastive=False,
    )


def coca(d: Dims) -> ModelConfig:
    """CoCa (Yu et al. 2022): ViT; a text decoder split into unimodal layers (ITC via an appended
    [CLS]) and multimodal layers with cross-attention (captioning LM)."""
    layers = d.text_depth if d.width == 768 else max(1, d.fusion_depth // 2 + 1)
    return ModelConfig(
        image_encoder=_vit(d),
        text_encoder=_embeddings_only(d, vocab_size=64000 if d.width == 768 else None, max_length=76 if d.width == 768 else d.max_length),
        fusion=CrossAttentionDecoderConfig(unimodal_depth=layers, multimodal_depth=layers, num_heads=d.heads),
        heads=HeadsConfig(lm=True, tie_word_embeddings=False),  # CoCa's output projection is its own matrix
        embed_dim=768 if d.width == 768 else d.embed_dim,
    )


def simvlm(d: Dims) -> ModelConfig:
    """SimVLM (Wang et al. 2022): ResNet stages as the image stem + one transformer trained with
    PrefixLM (image and a text prefix bidirectional, the rest causal)."""
    return ModelConfig(
        image_encoder=CNNGridConfig(depth_name=d.cnn, stages=min(3, d.cnn_stages), image_size=d.image_size, width=d.width, position_embedding=True),
        text_encoder=_embeddings_only(d),
        fusion=SelfAttentionDecoderConfig(depth=d.text_depth if d.width == 768 else d.image_depth, num_heads=d.heads, norm_first=True, eps=1e-6),
        heads=HeadsConfig(lm=True),
        contrastive=False,
    )


def _unified(d: Dims, experts: bool) -> ModelConfig:
    return ModelConfig(
        image_encoder=PatchEncoderConfig(image_size=d.image_size, patch_size=d.patch_size, width=d.width, pool="cls"),
        text_encoder=_embeddings_only(d, max_length=min(d.max_length, 196) if d.width == 768 else d.max_length),
        fusion=UnifiedConfig(depth=d.image_depth, num_heads=d.heads, experts=experts, vl_layers=(2 if d.width == 768 else 1) if experts else 0),
        heads=HeadsConfig(itm=True, mlm=True),
        embed_dim=d.embed_dim,
    )


def ufo(d: Dims) -> ModelConfig:
    """UFO (Wang et al. 2021): one transformer is image encoder, text encoder and fusion."""
    return _unified(d, experts=False)


def vlmo(d: Dims) -> ModelConfig:
    """VLMo (Bao et al. 2022): UFO's sharing with a mixture of modality experts (V-, L-, VL-FFN)."""
    return _unified(d, experts=True)


def vlp(d: Dims) -> ModelConfig:
    """Unified VLP (Zhou et al. 2020): region features + one transformer run with a bidirectional or a
    seq2seq mask (MLM and seq2seq MLM)."""
    return ModelConfig(
        image_encoder=_region(d),
        text_encoder=_embeddings_only(d),
        fusion=UnifiedSeq2SeqConfig(depth=d.text_depth if d.width == 768 else d.image_depth, num_heads=d.heads),
        heads=HeadsConfig(mlm=True),
        contrastive=False,
    )


FAMILIES: dict[str, Callable[[Dims], ModelConfig]] = {
    "clip": clip, "albef": albef, "blip": blip, "vilt": vilt, "uniter": uniter, "oscar": oscar,
    "visualbert": visualbert, "lxmert": lxmert, "meter": meter, "pixelbert": pixelbert, "git": git,
    "coca": coca, "simvlm": simvlm, "ufo": ufo, "vlmo": vlmo, "vlp": vlp,
}
REGION_FAMILIES = frozenset({"uniter", "oscar", "visualbert", "lxmert", "vlp"})


def _register(family: str, size: str) -> None:
    builder = FAMILIES[family]
    MODEL_PRESETS.register(f"{family}_{size}")(lambda: builder(DIMS[size]))


for _family in FAMILIES:
    for _size in SIZES:
        _register(_family, _size)


def model_preset(name: str) -> ModelConfig:
    factory: Callable[[], ModelConfig] = MODEL_PRESETS.get(name)
    return factory()


def family_of(name: str) -> str:
    return name.rsplit("_", 1)[0]
