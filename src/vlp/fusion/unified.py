"""One shared transformer that is image encoder, text encoder and fusion: UFO and VLMo.

UFO (Wang et al. 2021) feeds image embeddings, text embeddings or both to the same transformer
and lets the input and the mask decide which role it plays; VLMo (Bao et al. 2022) does the same
with a mixture of modality experts (`vlp.layers.experts`): attention shared, the FFN chosen per
token (V-FFN for image tokens, L-FFN for text tokens) and, in the top ``vl_layers`` layers of a
joint pass, one VL-FFN for all tokens. In image-only and text-only passes every layer uses the
modality's own expert, as in VLMo.

The model's image and text "encoders" are then just embeddings. `UnifiedImageEncoder` and
`UnifiedTextEncoder` wrap an embedding module and the shared transformer into the `Encoder`
interface so that `ImageTextModel` can use them unchanged. The views do *not* register the
shared transformer as a submodule: the model registers it once, as its fusion, so its
parameters appear once in ``parameters()`` and once in the state dict (safetensors refuses
aliased tensors, and a duplicated key would double the checkpoint). ``copy.deepcopy`` of the
model (momentum teachers) keeps the sharing, because the view refers to the same object.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from vlp.encoders.base import Encoder, EncoderOutput
from vlp.fusion.base import (
    check_stack,
    AttentionMode,
    Fusion,
    FusionOutput,
    PoolPosition,
    Pooler,
    cached_step_mask,
    init_weights,
    input_projection,
    joint_mask,
    real_tokens,
    resolve_width,
    run_layers,
    select_position,
    text_self_mask,
    with_self,
)
from vlp.layers import KVCache, TransformerBlock, padding_mask
from vlp.layers.experts import ModalityExpertsBlock, Segments


@dataclass
class UnifiedConfig:
    """UFO: the defaults. VLMo: ``experts=True, vl_layers=2`` (of 12 in VLMo-Base)."""

    kind: str = "unified"
    width: int | None = None  # None: the text embedding's width
    depth: int = 6
    num_heads: int = 12
    mlp_ratio: float = 4.0
    norm_first: bool = True  # ViT/BEiT-style pre-norm (UFO, VLMo)
    eps: float = 1e-6
    qkv_bias: bool = True
    dropout: float = 0.0
    experts: bool = False  # VLMo mixture of modality experts
    vl_layers: int = 0  # top layers whose joint tokens use the VL-FFN (experts only)
    pooler: bool = True  # Linear + tanh on the joint pooled position (VLMo/UFO ITM, VQA)
    pool: PoolPosition = "first"
    default_mode: AttentionMode = "bidirectional"

    def __post_init__(self) -> None:
        check_stack(self.depth, self.width, self.num_heads)
        if self.vl_layers and not self.experts:
            raise ValueError("vl_layers needs experts=True (without experts every FFN is shared already)")
        if not 0 <= self.vl_layers <= self.depth:
            raise ValueError(f"vl_layers must be between 0 and depth ({self.depth}), got {self.vl_layers}")


class UnifiedTransformer(Fusion):
    """The shared transformer: `encode_image`, `encode_text` and the joint `forward`."""

    kind: ClassVar[str] = "unified"
    supports_cache: ClassVar[bool] = True

    def __init__(self, cfg: UnifiedConfig, image_width: int, text_width: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.default_mode = cfg.default_mode
        self.width = width = resolve_width(cfg.width, text_width)
        self.image_proj = input_projection(image_width, width)
        self.text_proj = input_projection(text_width, width)
        # Added in every pass (VLMo does so too), so unimodal and joint inputs look alike to the stack.
        self.type_embeddings = nn.Embedding(2, width)  # 0 = text, 1 = image
        blocks: list[nn.Module] = []
        for index in range(cfg.depth):
            if cfg.experts:
                names = ["image", "text"] + (["vl"] if index >= cfg.depth - cfg.vl_layers else [])
                blocks.append(
                    ModalityExpertsBlock(
                        width, cfg.num_heads, names, cfg.mlp_ratio, norm_first=cfg.norm_first, eps=cfg.eps,
                        qkv_bias=cfg.qkv_bias, dropout=cfg.dropout,
                    )
                )
            else:
                blocks.append(
                    TransformerBlock(
                        width, cfg.num_heads, cfg.mlp_ratio, norm_first=cfg.norm_first, eps=cfg.eps,
                        qkv_bias=cfg.qkv_bias, dropout=cfg.dropout,
                    )
                )
        self.blocks = nn.ModuleList(blocks)
        self.grad_checkpointing = False
        self.norm: nn.Module = nn.LayerNorm(width, eps=cfg.eps) if cfg.norm_first else nn.Identity()
        self.pooler: nn.Module = Pooler(width) if cfg.pooler else nn.Identity()
        init_weights(self)

    def no_weight_decay(self) -> set[str]:
        return {"type_embeddings.weight"}

    def _run(
        self, x: torch.Tensor, mask: torch.Tensor | None, segments: list[Segments], cache: KVCache | None = None
    ) -> torch.Tensor:
        """All blocks; ``segments[i]`` routes block i's FFN experts (ignored without experts)."""
        layers = list(zip(self.blocks, segments))
        if cache is not None:  # incremental decoding: never checkpointed
            for index, (block, route) in enumerate(layers):
                layer_cache = cache.layer(index)
                x = block(x, route, mask, layer_cache) if isinstance(block, ModalityExpertsBlock) else block(x, mask, cache=layer_cache)
            return self.norm(x)

        def step(layer: tuple[nn.Module, Segments], h: torch.Tensor) -> torch.Tensor:
            block, route = layer
            if isinstance(block, ModalityExpertsBlock):
                return block(h, route, mask)
            return block(h, mask)

        # run_layers checkpoints `step(layer, h)`; pass the (block, route) pairs as the layers.
        return self.norm(run_layers(layers, x, self.grad_checkpointing, step))  # type: ignore[arg-type]

    def encode_image(self, image: EncoderOutput) -> EncoderOutput:
        """Image-only pass (V-FFN everywhere); pooled = position 0 (the image [CLS] of the embedding)."""
        v = self.image_proj(image.tokens) + self.type_embeddings.weight[1]
        mask = None if image.mask is None else with_self(padding_mask(image.mask).expand(-1, 1, v.shape[1], -1))
        x = self._run(v, mask, [[("image", v.shape[1])]] * len(self.blocks))
        return EncoderOutput(tokens=x, pooled=x[:, 0], mask=image.mask)

    def encode_text(self, text: EncoderOutput) -> EncoderOutput:
        """Text-only bidirectional pass (L-FFN everywhere); pooled = position 0 ([CLS])."""
        t = self.text_proj(text.tokens) + self.type_embeddings.weight[0]
        mask = text_self_mask("bidirectional", t.shape[1], text.mask, None, t.device)
        x = self._run(t, mask, [[("text", t.shape[1])]] * len(self.blocks))
        return EncoderOutput(tokens=x, pooled=x[:, 0], mask=text.mask)

    def forward(
        self,
        image: EncoderOutput | None,
        text: EncoderOutput,
        mode: AttentionMode | None = None,
        prefix_length: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> FusionOutput:
        """Joint pass over [text; image] (VLMo order) under the mode's mask (see `vlp.fusion.base`).

        ``cache``: incremental decoding (see `Fusion.forward`); new text tokens take the text
        expert, or the VL expert in the top ``vl_layers``, as in a joint pass."""
        if cache is not None and not cache.empty:
            return self._step(text, cache)
        if image is None:
            raise ValueError("the image is needed unless a filled cache is given")
        mode = self.resolve_mode(mode, prefix_length)
        t = self.text_proj(text.tokens) + self.type_embeddings.weight[0]
        v = self.image_proj(image.tokens) + self.type_embeddings.weight[1]
        num_text, num_image = t.shape[1], v.shape[1]
        mask = joint_mask(mode, num_text, num_image, text.mask, image.mask, prefix_length, t.device)
        split: Segments = [("text", num_text), ("image", num_image)]
        joint: Segments = [("vl", num_text + num_image)]
        routes = [joint if index >= len(self.blocks) - self.cfg.vl_layers else split for index in range(len(self.blocks))]
        if cache is not None:
            batch = t.shape[0]
            cache.extend_keys(torch.cat([real_tokens(text.mask, batch, num_text, t.device), real_tokens(image.mask, batch, num_image, t.device)], dim=1))
        x = self._run(torch.cat([t, v], dim=1), mask, routes, cache)
        text_tokens, image_tokens = x[:, :num_text], x[:, num_text:]
        pooled = self.pooler(select_position(text_tokens, text.mask, self.cfg.pool))
        return FusionOutput(text_tokens=text_tokens, image_tokens=image_tokens, pooled=pooled)

    def _step(self, text: EncoderOutput, cache: KVCache) -> FusionOutput:
        t = self.text_proj(text.tokens) + self.type_embeddings.weight[0]
        length = t.shape[1]
        mask = cached_step_mask(cache, text.mask, t.shape[0], length, t.device)
        routes: list[Segments] = [
            [("vl", length)] if index >= len(self.blocks) - self.cfg.vl_layers else [("text", length)]
            for index in range(len(self.blocks))
        ]
        x = self._run(t, mask, routes, cache)
        return FusionOutput(text_tokens=x, image_tokens=None, pooled=None)


class _SharedView(Encoder):
    """Encoder view of a `UnifiedTransformer`: owns the embedding, borrows the shared transformer."""

    def __init__(self, shared: UnifiedTransformer, embed: nn.Module) -> None:
        super().__init__()
        self.embed = embed
        # object.__setattr__ bypasses nn.Module registration: the owner of the model registers
        # `shared` once (as its fusion). See the module docstring.
        object.__setattr__(self, "_shared", shared)
        self.width = shared.width

    @property
    def shared(self) -> UnifiedTransformer:
        return self._shared  # type: ignore[no-any-return]

    def train(self, mode: bool = True) -> _SharedView:
        super().train(mode)
        self.shared.train(mode)
        return self

    def lock(self, unlocked_groups: int = 0) -> None:
        """Freezes the embedding only: the shared transformer is the fusion too, lock it there."""
        super().lock(unlocked_groups)

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        super().set_grad_checkpointing(enabled)
        self.shared.set_grad_checkpointing(enabled)

    def no_weight_decay(self) -> set[str]:
        inner = getattr(self.embed, "no_weight_decay", None)
        return {f"embed.{name}" for name in inner()} if callable(inner) else set()


class UnifiedImageEncoder(_SharedView):
    """``embed(pixels)`` (patch conv + [CLS] + positions) -> shared transformer, image experts."""

    def forward(self, *args: Any, **kwargs: Any) -> EncoderOutput:
        out = self.embed(*args, **kwargs)
        return self.shared.encode_image(out if isinstance(out, EncoderOutput) else EncoderOutput(tokens=out))


class UnifiedTextEncoder(_SharedView):
    """``embed(input_ids[, token_type_ids])`` (word + position embeddings) -> shared transformer."""

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> EncoderOutput:
        out = self.embed(input_ids) if token_type_ids is None else self.embed(input_ids, token_type_ids)
        if not isinstance(out, EncoderOutput):
            out = EncoderOutput(tokens=out, mask=attention_mask)
        elif out.mask is None:
            out = EncoderOutput(tokens=out.tokens, pooled=out.pooled, mask=attention_mask)
        return self.shared.encode_text(out)
