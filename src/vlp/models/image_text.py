"""ImageTextModel: injected image encoder, text encoder, optional fusion and decoder, and heads.

One class covers the lecture's design space because the parts are injected (torchmultimodal's
ALBEF shows the value of injection): a dual encoder (CLIP) has no fusion; ALBEF adds a
cross-attention fusion; ViLT/UNITER a single-stream one; BLIP a fusion for ITM plus a decoder for
LM; GIT/CoCa/VLP use one module with causal or seq2seq masks; UFO/VLMo share one transformer
between both modalities and the fusion. The model maps tensors to features, embeddings and
logits; it knows nothing of losses, data loading, devices or distribution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlp.encoders import (
    Encoder,
    EncoderOutput,
    ImageEncoderConfig,
    RegionInputs,
    TextEncoderConfig,
    TextTransformer,
    TextTransformerConfig,
    ViTConfig,
    build_image_encoder,
    build_text_encoder,
)
from vlp.fusion import (
    BLIPTextTransformer,
    CrossAttentionDecoder,
    Fusion,
    FusionConfig,
    FusionOutput,
    NoFusionConfig,
    UnifiedImageEncoder,
    UnifiedTextEncoder,
    UnifiedTransformer,
    build_fusion,
)
from vlp.heads import ITMHead, TokenPredictionHead
from vlp.layers import KVCache

ImageInput = torch.Tensor | RegionInputs


@dataclass
class HeadsConfig:
    itm: bool = False  # matched/unmatched classifier on the fused pooled state
    mlm: bool = False  # token prediction over the fusion's text states (MLM, seq2seq MLM)
    lm: bool = False  # token prediction over the decoder's text states (LM, PrefixLM)
    tie_word_embeddings: bool = True  # decoder weights = text word embeddings when widths agree
    lm_transform: bool = True  # BERT's dense + GELU + LayerNorm before the LM decoder; False: one Linear (GIT)


@dataclass
class ModelConfig:
    image_encoder: ImageEncoderConfig = field(default_factory=ViTConfig)
    text_encoder: TextEncoderConfig = field(default_factory=TextTransformerConfig)
    fusion: FusionConfig = field(default_factory=NoFusionConfig)
    # A separate text decoder (BLIP's captioner). `none`: language modelling runs through `fusion`
    # with a causal / seq2seq mask (GIT, CoCa, VLP, UFO).
    decoder: FusionConfig = field(default_factory=NoFusionConfig)
    heads: HeadsConfig = field(default_factory=HeadsConfig)
    contrastive: bool = True  # projections + temperature for ITC (CLIP, ALBEF, BLIP, CoCa, UFO, VLMo)
    embed_dim: int = 128  # shared embedding space of ITC
    proj_bias: bool = False  # biases on the ITC projections (CLIP has none; BLIP's vision_proj/text_proj do)
    init_temperature: float = 0.07  # CLIP's initial tau
    learn_temperature: bool = True
    max_logit_scale: float = 100.0  # clamp of 1/tau, as in CLIP, so training cannot blow it up
    lock_image: bool = False
    lock_text: bool = False  # LiT (Zhai et al. 2022) locks the image tower; locking a pretrained text tower is the mirror image
    grad_checkpointing: bool = False

    def __post_init__(self) -> None:
        if not 0.0 < self.init_temperature:
            raise ValueError("init_temperature must be positive")
        if self.max_logit_scale < 1.0 / self.init_temperature:
            raise ValueError("max_logit_scale must be at least 1 / init_temperature")
        if self.heads.itm and self.fusion.kind == "none":
            raise ValueError("heads.itm needs a fusion module (fusion.kind is 'none')")
        if self.heads.mlm and self.fusion.kind == "none":
            raise ValueError("heads.mlm needs a fusion module (fusion.kind is 'none')")
        if self.heads.lm and self.fusion.kind == "none" and self.decoder.kind == "none":
            raise ValueError("heads.lm needs a decoder or a fusion that can run causally")


@dataclass
class ModelOutput:
    """Dual-encoder outputs; fields stay None when the architecture has no such output."""

    image_embeds: torch.Tensor | None = None  # [B, E], l2-normalised
    text_embeds: torch.Tensor | None = None  # [B, E], l2-normalised
    logit_scale: torch.Tensor | None = None  # scalar 1/tau, already clamped


@dataclass
class PairFeatures:
    """Everything tasks need from one pass over a batch's images and texts, computed once.

    `image`/`text` are the unimodal features (pooled -> ITC); `image_for_fusion`/`text_for_fusion`
    are what the fusion consumes: the same objects for ALBEF-like models, the bare embeddings for
    unified models (UFO/VLMo), whose shared transformer does the encoding jointly.
    """

    image: EncoderOutput
    text: EncoderOutput
    image_for_fusion: EncoderOutput
    text_for_fusion: EncoderOutput


class ImageTextModel(nn.Module):
    def __init__(
        self,
        image_encoder: Encoder,
        text_encoder: Encoder,
        cfg: ModelConfig,
        fusion: Fusion | None = None,
        decoder: Fusion | None = None,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.fusion = fusion
        self.decoder = decoder
        # The bare token embedder, kept out of the child list (it is registered inside the text
        # encoder): decoders read embeddings, never a bidirectional encoder's output, which would
        # leak later tokens into earlier positions.
        self._raw_text: list[Encoder] = [text_encoder]
        self._raw_image: list[Encoder] = [image_encoder]
        self.unified = isinstance(fusion, UnifiedTransformer)
        # Text encoded by the fusion stack itself: unified models, and BLIP (whose ITC text encoder,
        # ITM encoder and decoder are one shared stack).
        self.shared_text = self.unified or isinstance(fusion, BLIPTextTransformer)
        if self.shared_text:
            if not isinstance(text_encoder, TextTransformer):
                raise ValueError(f"the {fusion.kind!r} fusion needs the 'bert' text encoder as its token embedder")  # type: ignore[union-attr]
            text_encoder = UnifiedTextEncoder(fusion, text_encoder.embeddings)  # type: ignore[arg-type]
        if self.unified:
            image_encoder = UnifiedImageEncoder(fusion, image_encoder)  # type: ignore[arg-type]
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        # CoCa: the decoder's unimodal (text-only) layers give the text embedding for ITC.
        self.unimodal_text_decoder = isinstance(fusion, CrossAttentionDecoder) and fusion.cfg.unimodal_depth > 0
        image_width = fusion.width if self.unified else image_encoder.width
        text_width = fusion.width if (self.shared_text or self.unimodal_text_decoder) else text_encoder.width
        if cfg.contrastive:
            self.image_proj = nn.Linear(image_width, cfg.embed_dim, bias=cfg.proj_bias)
            self.text_proj = nn.Linear(text_width, cfg.embed_dim, bias=cfg.proj_bias)
            nn.init.normal_(self.image_proj.weight, std=image_width**-0.5)
            nn.init.normal_(self.text_proj.weight, std=text_width**-0.5)
            init = torch.tensor(math.log(1.0 / cfg.init_temperature))
            # Stored as log(1/tau) like CLIP: the optimiser then moves tau multiplicatively.
            self.log_logit_scale = nn.Parameter(init, requires_grad=cfg.learn_temperature)
        word_embeddings = self._raw_text[0].embeddings.word_embeddings if isinstance(self._raw_text[0], TextTransformer) else None
        vocab_size = getattr(getattr(self._raw_text[0], "cfg", None), "vocab_size", None)
        self.itm_head = ITMHead(fusion.width) if cfg.heads.itm and fusion is not None else None
        self.mlm_head = self._token_head(fusion, vocab_size, word_embeddings) if cfg.heads.mlm else None
        self.lm_head = self._token_head(decoder or fusion, vocab_size, word_embeddings, cfg.heads.lm_transform) if cfg.heads.lm else None
        if cfg.lock_image:
            self._raw_image[0].lock()
        if cfg.lock_text:
            self._raw_text[0].lock()
        if cfg.grad_checkpointing:
            self.set_grad_checkpointing(True)

    def _token_head(
        self, module: Fusion | None, vocab_size: int | None, embeddings: nn.Embedding | None, transform: bool = True
    ) -> TokenPredictionHead:
        if module is None or vocab_size is None:
            raise ValueError("token prediction needs a fusion/decoder and a text encoder with a known vocabulary")
        tie = embeddings if (self.cfg.heads.tie_word_embeddings and embeddings is not None and embeddings.embedding_dim == module.width) else None
        return TokenPredictionHead(module.width, vocab_size, tied_embedding=tie, transform=transform)

    # ------------------------------------------------------------------ housekeeping
    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        for module in (self._raw_image[0], self._raw_text[0], self.fusion, self.decoder):
            if module is not None:
                module.set_grad_checkpointing(enabled)

    def no_weight_decay(self) -> set[str]:
        names = {"log_logit_scale"}
        image_prefix = "image_encoder.embed." if self.unified else "image_encoder."
        names |= {image_prefix + n for n in self._raw_image[0].no_weight_decay()}
        text_raw = self._raw_text[0]
        if self.shared_text:
            names |= {"text_encoder.embed." + n.removeprefix("embeddings.") for n in text_raw.no_weight_decay() if n.startswith("embeddings.")}
        else:
            names |= {"text_encoder." + n for n in text_raw.no_weight_decay()}
        for prefix, module in (("fusion.", self.fusion), ("decoder.", self.decoder)):
            if module is not None and hasattr(module, "no_weight_decay"):
                names |= {prefix + n for n in module.no_weight_decay()}
        return names

    # ------------------------------------------------------------------ unimodal
    def logit_scale(self) -> torch.Tensor:
        # The clamp lives here rather than in the training loop so every caller sees the same value;
        # clamp() passes no gradient past the bound, which is what CLIP's post-step clamp achieves.
        return self.log_logit_scale.clamp(max=math.log(self.cfg.max_logit_scale)).exp()

    def image_features(self, image: ImageInput) -> EncoderOutput:
        return self.image_encoder(image)

    def text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> EncoderOutput:
        out = self.text_encoder(input_ids, attention_mask)
        if self.unimodal_text_decoder:
            assert isinstance(self.fusion, CrossAttentionDecoder)
            out = self.fusion.encode_text_unimodal(out)
        return out

    def text_embeddings(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor | None = None
    ) -> EncoderOutput:
        """Token + position embeddings only: what decoders and unified fusions consume."""
        raw = self._raw_text[0]
        if not isinstance(raw, TextTransformer):
            raise ValueError(f"{type(raw).__name__} exposes no token embeddings for a decoder")
        return EncoderOutput(tokens=raw.embeddings(input_ids, position_ids=position_ids), mask=attention_mask)

    def image_embeddings(self, image: ImageInput) -> EncoderOutput:
        """Input tokens of the image side for a unified fusion (patch embeddings)."""
        out = self._raw_image[0](image)
        return out if isinstance(out, EncoderOutput) else EncoderOutput(tokens=out)

    def project_image(self, features: EncoderOutput, normalize: bool = True) -> torch.Tensor:
        assert features.pooled is not None, "image encoder produced no pooled vector"
        embeds = self.image_proj(features.pooled)
        return F.normalize(embeds, dim=-1) if normalize else embeds

    def project_text(self, features: EncoderOutput, normalize: bool = True) -> torch.Tensor:
        assert features.pooled is not None, "text encoder produced no pooled vector"
        embeds = self.text_proj(features.pooled)
        return F.normalize(embeds, dim=-1) if normalize else embeds

    def encode_image(self, image: ImageInput, normalize: bool = True) -> torch.Tensor:
        return self.project_image(self.image_features(image), normalize)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return self.project_text(self.text_features(input_ids, attention_mask), normalize)

    def image_for_fusion(self, image: ImageInput) -> EncoderOutput:
        """What the fusion/decoder reads of an image: patch embeddings for unified models (the
        shared stack encodes them jointly), the image encoder's output otherwise."""
        return self.image_embeddings(image) if self.unified else self.image_features(image)

    # ------------------------------------------------------------------ multimodal
    def pair_features(self, image: ImageInput, input_ids: torch.Tensor, attention_mask: torch.Tensor, unimodal: bool = True) -> PairFeatures:
        """Unimodal features (for ITC) and fusion inputs, sharing the work where they coincide."""
        image_uni, image_in = self.image_pair_features(image, unimodal)
        text_uni, text_in = self.text_pair_features(input_ids, attention_mask, unimodal)
        return PairFeatures(image_uni, text_uni, image_in, text_in)

    def image_pair_features(self, image: ImageInput, unimodal: bool = True) -> tuple[EncoderOutput, EncoderOutput]:
        """The image half of `pair_features`: (unimodal features, fusion input). The halves are
        independent, so a retrieval gallery can encode its images and its captions separately, once."""
        if self.unified:
            image_in = self.image_for_fusion(image)
            return (self.fusion.encode_image(image_in) if unimodal else image_in), image_in  # type: ignore[union-attr]
        image_out = self.image_features(image)
        return image_out, image_out

    def text_pair_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, unimodal: bool = True) -> tuple[EncoderOutput, EncoderOutput]:
        """The text half of `pair_features`: (unimodal features, fusion input)."""
        if self.shared_text:  # BLIP and unified models: unimodal pass through the shared stack, fusion reads embeddings
            text_in = self.text_embeddings(input_ids, attention_mask)
            return (self.fusion.encode_text(text_in) if unimodal else text_in), text_in  # type: ignore[union-attr]
        if self.unimodal_text_decoder:  # CoCa: the decoder re-runs its unimodal layers from embeddings
            text_in = self.text_encoder(input_ids, attention_mask)
            return (self.fusion.encode_text_unimodal(text_in) if unimodal else text_in), text_in  # type: ignore[union-attr]
        text_out = self.text_encoder(input_ids, attention_mask)
        return text_out, text_out

    def text_for_fusion(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> EncoderOutput:
        """What the fusion consumes for (e.g. masked) text: embeddings for unified models and CoCa,
        the text encoder's output otherwise (ALBEF's text layers, or ViLT/UNITER's bare embedder)."""
        if self.shared_text:
            return self.text_embeddings(input_ids, attention_mask)
        return self.text_encoder(input_ids, attention_mask)

    def fuse(self, image: EncoderOutput, text: EncoderOutput, mode: str | None = None, prefix_length: Any = None) -> FusionOutput:
        if self.fusion is None:
            raise ValueError("this model has no fusion module (a dual encoder)")
        return self.fusion(image, text, mode=mode, prefix_length=prefix_length)

    def pool(self, image: EncoderOutput, text: EncoderOutput, mode: str | None = None, image_index: torch.Tensor | None = None) -> torch.Tensor:
        """Only the fusion's pooled state [B, D] (see `Fusion.pool`): what `fuse(...).pooled` gives,
        without the work no pooled read-out needs. ``image_index`` [B] pairs text row b with image
        row ``image_index[b]``, so ``image`` can hold each distinct image of a batch of pairs once."""
        if self.fusion is None:
            raise ValueError("this model has no fusion module (a dual encoder)")
        return self.fusion.pool(image, text, mode=mode, image_index=image_index)  # type: ignore[arg-type]

    def itm_pair_logits(self, image: EncoderOutput, text: EncoderOutput, image_index: torch.Tensor | None = None) -> torch.Tensor:
        """ITM logits [B, 2] of (image row ``image_index[b]``, text row b): `pool` + the ITM head,
        equal to ``itm_logits(fuse(image.select(image_index), text, "bidirectional"))``."""
        if self.itm_head is None:
            raise ValueError("this model has no ITM head")
        return self.itm_head(self.pool(image, text, "bidirectional", image_index))  # type: ignore[no-any-return]

    def decode(
        self,
        image: EncoderOutput | None,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        mode: str = "causal",
        prefix_length: Any = None,
        cache: KVCache | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> FusionOutput:
        """Run the language-modelling path: the decoder if there is one, else the fusion with a causal
        or seq2seq mask. Text enters as embeddings; the mode keeps later tokens invisible.

        ``cache`` (incremental decoding, `vlp.generation`): the first call (image + prompt) fills it;
        later calls pass only the new tokens (``image`` may be None), which take the next text
        positions of their rows and see everything cached. ``position_ids`` overrides positions
        (a full recomputation that must match a cached run with padded prompts)."""
        module = self.decoder if self.decoder is not None else self.fusion
        if module is None:
            raise ValueError("this model has neither a decoder nor a fusion module")
        if cache is not None and not module.supports_cache:
            raise ValueError(f"the {module.kind!r} module has no incremental decoding (use_cache=False)")
        if cache is not None and not cache.empty:
            assert cache.next_position is not None
            position_ids = cache.next_position[:, None] + torch.arange(input_ids.shape[1], device=input_ids.device)
        text = self.text_embeddings(input_ids, attention_mask, position_ids)
        if self.unimodal_text_decoder and self.decoder is None:
            # CoCa's embeddings (+ the encoder's final norm); the unimodal layers run inside the decoder.
            raw = self._raw_text[0]
            if cache is None and position_ids is None:
                text = self.text_encoder(input_ids, attention_mask)
            elif isinstance(raw, TextTransformer) and raw.cfg.depth == 0:
                text = EncoderOutput(tokens=raw.final_norm(text.tokens), mask=attention_mask)
            else:
                raise ValueError("incremental decoding needs the decoder to read bare embeddings (text_encoder.depth=0)")
        if cache is None:  # fusions without incremental decoding take no cache argument
            return module(image, text, mode=mode, prefix_length=prefix_length)
        out = module(image, text, mode=mode, prefix_length=prefix_length, cache=cache)
        count = attention_mask.long().sum(dim=1)
        cache.next_position = count if cache.next_position is None else cache.next_position + count
        return out

    def itm_logits(self, fused: FusionOutput) -> torch.Tensor:
        if self.itm_head is None or fused.pooled is None:
            raise ValueError("this model has no ITM head")
        return self.itm_head(fused.pooled)

    def mlm_logits(self, fused: FusionOutput, rows: torch.Tensor | None = None) -> torch.Tensor:
        """[B, L, V] logits, or with ``rows`` ([B, L] bool) [n, V] logits of the selected positions only."""
        if self.mlm_head is None or fused.text_tokens is None:
            raise ValueError("this model has no MLM head")
        return self.mlm_head(_select_rows(fused.text_tokens, rows))

    def lm_logits(self, decoded: FusionOutput, rows: torch.Tensor | None = None) -> torch.Tensor:
        """[B, L, V] logits, or with ``rows`` ([B, L] bool) [n, V] logits of the selected positions only.

        Losses pass the positions that have a target: the vocabulary projection (and its log-softmax)
        is most of a small model's step, and padding, the last position and unmasked MLM tokens
        would otherwise be projected to 30k words only to be ignored by the loss."""
        if self.lm_head is None or decoded.text_tokens is None:
            raise ValueError("this model has no LM head")
        return self.lm_head(_select_rows(decoded.text_tokens, rows))

    def lm_projection_inputs(self, decoded: FusionOutput, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``lm_logits(decoded, rows)`` before its last linear map: (hidden [n, D], weight [V, D], bias [V])."""
        if self.lm_head is None or decoded.text_tokens is None:
            raise ValueError("this model has no LM head")
        return self.lm_head.projection_inputs(_select_rows(decoded.text_tokens, rows))

    def mlm_projection_inputs(self, fused: FusionOutput, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``mlm_logits(fused, rows)`` before its last linear map: (hidden [n, D], weight [V, D], bias [V])."""
        if self.mlm_head is None or fused.text_tokens is None:
            raise ValueError("this model has no MLM head")
        return self.mlm_head.projection_inputs(_select_rows(fused.text_tokens, rows))

    def forward(self, image: ImageInput, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> ModelOutput:
        """Dual-encoder forward (ITC embeddings); multimodal paths are the methods above."""
        if not self.cfg.contrastive:
            raise ValueError("this model has no contrastive embeddings (contrastive=False)")
        return ModelOutput(
            image_embeds=self.encode_image(image),
            text_embeds=self.encode_text(input_ids, attention_mask),
            logit_scale=self.logit_scale(),
        )


def _select_rows(tokens: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
    if rows is None:
        return tokens
    if rows.shape != tokens.shape[:-1] or rows.dtype != torch.bool:
        raise ValueError(f"rows must be a bool mask of shape {tuple(tokens.shape[:-1])}, got {rows.dtype} {tuple(rows.shape)}")
    return tokens[rows]


def build_model(cfg: ModelConfig) -> ImageTextModel:
    """Build a model from a fully resolved config (text vocab size known)."""
    image = build_image_encoder(cfg.image_encoder)
    text = build_text_encoder(cfg.text_encoder)
    fusion = build_fusion(cfg.fusion, image.width, text.width)
    decoder = build_fusion(cfg.decoder, image.width, text.width)
    return ImageTextModel(image, text, cfg, fusion=fusion, decoder=decoder)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


__all__ = [
    "HeadsConfig",
    "ImageTextModel",
    "ModelConfig",
    "ModelOutput",
    "PairFeatures",
    "TextTransformerConfig",
    "build_model",
    "count_parameters",
]
