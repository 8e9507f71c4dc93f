"""What every fusion module takes and returns, and the mask logic they share.

The lecture's point is that most fusion kinds are "the same transformer with a different mask"
(UNITER, VLP/UniLM, GIT, UFO). So the masks are built here, once, from the *modality* of each
token rather than its position: a mode says which text tokens a text token may see and whether
image tokens may see text, and the joint mask is assembled block by block
([text->text, text->image; image->text, image->image]). Because of that the order in which a
fusion concatenates the streams is an implementation detail: attention is permutation
equivariant and none of our fusions adds joint position embeddings, so [text; image] (UNITER,
ViLT, VLMo) and [image; text] (GIT, VLP) give the same outputs.

Mode semantics (all with padding masks on top):

* ``bidirectional``: every real token sees every real token (BERT, UNITER, ALBEF fusion).
* ``causal``: text token i sees text tokens <= i and every image token; image tokens see no text
  (if they did, text token i would read later text through them).
* ``seq2seq``: the prefix = all image tokens + the first ``prefix_length[b]`` text tokens, visible
  to everyone and bidirectional among themselves; later text tokens are causal (VLP, SimVLM
  PrefixLM, GIT VQA). ``prefix_length=None`` means 0, so seq2seq without a prefix equals causal
  (exactly VLP's seq2seq mask: image sees image only, text sees image + earlier text).

Every mask also lets each query see itself. A query whose keys are all masked (a padding token
under a causal mask with left padding, say) gets NaN from some SDPA backends (CPU in torch 2.14
returns zeros, older versions and fused GPU kernels may not), and NaN in a padded value vector
poisons real tokens in the next layer (0 * NaN = NaN). Real queries always see themselves
anyway, so the diagonal changes nothing for them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, get_args

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from vlp.encoders.base import EncoderOutput
from vlp.layers import KVCache, causal_mask, padding_mask, seq2seq_mask

AttentionMode = Literal["bidirectional", "causal", "seq2seq"]
ATTENTION_MODES: tuple[AttentionMode, ...] = get_args(AttentionMode)
PoolPosition = Literal["first", "last"]


@dataclass
class FusionOutput:
    """Fused states. Heads read ``text_tokens`` (MLM/LM/ITM per token) and ``pooled`` (ITM/VQA)."""

    text_tokens: torch.Tensor | None  # [B, L, D] at the text positions, in text order
    image_tokens: torch.Tensor | None  # [B, N, D]; None when the fusion does not update the image
    pooled: torch.Tensor | None  # [B, D] joint representation


class Fusion(nn.Module):
    """Base class: mode checking, gradient checkpointing, weight-decay exemptions.

    Subclasses set ``kind`` and ``modes`` (the attention modes the architecture can do) and
    ``default_mode`` (used when ``forward`` gets ``mode=None``: a GIT/CoCa decoder's natural mode
    is not bidirectional).
    """

    kind: ClassVar[str] = "fusion"
    modes: ClassVar[tuple[AttentionMode, ...]] = ATTENTION_MODES
    width: int
    default_mode: AttentionMode = "bidirectional"
    # Whether ``forward`` takes a `KVCache` (incremental decoding); set by the LM-capable fusions.
    supports_cache: ClassVar[bool] = False

    def forward(  # pragma: no cover - abstract
        self,
        image: EncoderOutput,
        text: EncoderOutput,
        mode: AttentionMode | None = None,
        prefix_length: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> FusionOutput:
        """Fuse ``image`` and ``text``. Fusions that can decode incrementally (the LM-capable ones)
        accept ``cache``: when it is empty the call is the usual pass (the "prefill" of image and
        prompt) that also fills it; afterwards ``text`` holds only new tokens, which see every
        real cached position and each other causally, and ``image`` may be None."""
        raise NotImplementedError

    def pool(
        self, image: EncoderOutput, text: EncoderOutput, mode: AttentionMode | None = None,
        image_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Only the pooled joint state [B, D] (all an ITM or VQA head reads) of text row b fused
        with image row ``image_index[b]`` (row b when None).

        ``image`` may thus hold each distinct image once ([U, N, D]) for a batch of B pairs (one
        image, many captions). This default selects the rows and runs `forward`; fusions that can
        skip work the pooled state does not need override it (BLIP and ALBEF-style fusions project
        each image's keys/values once and run their last layer's query side on the pooled row)."""
        if image_index is not None:
            image = image.select(image_index)
        pooled = self(image, text, mode=mode).pooled
        if pooled is None:
            raise ValueError(f"fusion {self.kind!r} gives no pooled state")
        return pooled  # type: ignore[no-any-return]

    def resolve_mode(self, mode: AttentionMode | None, prefix_length: torch.Tensor | int | None) -> AttentionMode:
        """``mode`` or the default, checked against what this architecture supports."""
        mode = self.default_mode if mode is None else mode
        if mode not in ATTENTION_MODES:
            raise ValueError(f"unknown attention mode {mode!r}; expected one of {ATTENTION_MODES}")
        if mode not in self.modes:
            raise ValueError(f"fusion {self.kind!r} does not support mode {mode!r} (supported: {self.modes})")
        if prefix_length is not None and mode != "seq2seq":
            # Silently ignoring it would hide a caller that meant to run a prefix LM.
            raise ValueError(f"prefix_length is only used in 'seq2seq' mode, got mode {mode!r}")
        return mode

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        for module in self.modules():
            if hasattr(module, "grad_checkpointing"):
                module.grad_checkpointing = enabled

    def no_weight_decay(self) -> set[str]:
        """Parameter names exempt from weight decay besides biases and norms (embeddings)."""
        return set()


# ---------------------------------------------------------------------------------------------
# construction helpers


def resolve_width(width: int | None, text_width: int) -> int:
    """A fusion config's ``width``; None means "the text encoder's width" (ALBEF, BLIP, CoCa)."""
    return text_width if width is None else width


def input_projection(in_width: int, width: int, norm_eps: float | None = None) -> nn.Module:
    """Linear when the encoder width differs from the fusion width (METER: ViT 768/1024 + RoBERTa), else identity.

    ``norm_eps``: always Linear + LayerNorm(eps), even at equal widths. GIT learns this projection
    (its ``visual_projection``) between the CLIP image tower and the text decoder; the LayerNorm puts
    image tokens on the scale of the post-norm decoder's normalised text embeddings.
    """
    if norm_eps is not None:
        return nn.Sequential(nn.Linear(in_width, width), nn.LayerNorm(width, eps=norm_eps))
    return nn.Identity() if in_width == width else nn.Linear(in_width, width)


def init_weights(module: nn.Module) -> None:
    """BERT initialisation (truncated normal 0.02, zero biases), as our text and image encoders use."""
    for sub in module.modules():
        if isinstance(sub, (nn.Linear, nn.Embedding)):
            nn.init.trunc_normal_(sub.weight, std=0.02)
        if isinstance(sub, nn.Linear) and sub.bias is not None:
            nn.init.zeros_(sub.bias)


class Pooler(nn.Module):
    """BERT pooler: Linear + tanh over one position (UNITER, ViLT, LXMERT, VLMo ITM/VQA input)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.dense = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(x))


def select_position(tokens: torch.Tensor, mask: torch.Tensor | None, position: PoolPosition) -> torch.Tensor:
    """[B, L, D] -> [B, D]: the first token ([CLS]) or the last real one.

    "last" is what a causal model pools (only the last real token has seen the whole text; CLIP
    and CoCa without a CLS use the EOS). It is found as the largest real index, so left and right
    padding both work.
    """
    if position == "first":
        return tokens[:, 0]
    return tokens[torch.arange(tokens.shape[0], device=tokens.device), pool_index(mask, tokens.shape[0], tokens.shape[1], position, tokens.device)]


def pool_index(mask: torch.Tensor | None, batch: int, length: int, position: PoolPosition, device: torch.device) -> torch.Tensor:
    """[B] long: the position `select_position` reads (0, or the largest real index for "last")."""
    if position == "first":
        return torch.zeros(batch, dtype=torch.long, device=device)
    if mask is None:
        return torch.full((batch,), length - 1, dtype=torch.long, device=device)
    return (mask.bool().long() * torch.arange(1, length + 1, device=device)).argmax(dim=1)


def image_key_mask(image: EncoderOutput, image_index: torch.Tensor | None) -> torch.Tensor | None:
    """`key_mask` of the image rows each sample reads ([B, 1, 1, N] or None)."""
    if image.mask is None or image_index is None:
        return key_mask(image.mask)
    return key_mask(image.mask.index_select(0, image_index))


def run_layers(
    layers: Sequence[nn.Module], x: Any, grad_checkpointing: bool, step: Callable[[nn.Module, Any], Any]
) -> Any:
    """Apply ``step(layer, x)`` layer by layer, checkpointing each layer when asked and training.

    For stacks whose layers take more than ``Transformer``'s signature (two streams, expert routing).
    """
    for layer in layers:
        if grad_checkpointing and torch.is_grad_enabled():
            x = checkpoint(step, layer, x, use_reentrant=False)
        else:
            x = step(layer, x)
    return x


# ---------------------------------------------------------------------------------------------
# masks (boolean, True = may attend, [B|1, 1, Lq, Lk])


def _prefix(prefix_length: torch.Tensor | int | None, device: torch.device) -> torch.Tensor:
    """Prefix lengths as a [B or 1] long tensor (None -> 0)."""
    if prefix_length is None:
        return torch.zeros(1, dtype=torch.long, device=device)
    return torch.as_tensor(prefix_length, device=device).reshape(-1).long()


def with_self(mask: torch.Tensor) -> torch.Tensor:
    """``mask`` OR identity, so no query row is fully masked (see the module docstring)."""
    eye = torch.eye(mask.shape[-2], mask.shape[-1], dtype=torch.bool, device=mask.device)
    return mask | eye


def text_self_mask(
    mode: AttentionMode, length: int, text_mask: torch.Tensor | None, prefix_length: torch.Tensor | int | None,
    device: torch.device,
) -> torch.Tensor:
    """Mask of text self-attention: [B|1, 1, L, L]."""
    if mode == "bidirectional":
        mask = torch.ones(1, 1, length, length, dtype=torch.bool, device=device)
    elif mode == "causal":
        mask = causal_mask(length, device)
    else:
        mask = seq2seq_mask(_prefix(prefix_length, device), length, device)
    if text_mask is not None:
        mask = mask & padding_mask(text_mask)
    return with_self(mask)


def image_to_text_mask(
    mode: AttentionMode, num_image: int, length: int, prefix_length: torch.Tensor | int | None, device: torch.device
) -> torch.Tensor:
    """Which text keys image queries may see: [B|1, 1, N, L] (all, none, or the text prefix)."""
    if mode == "bidirectional":
        return torch.ones(1, 1, num_image, length, dtype=torch.bool, device=device)
    if mode == "causal":
        return torch.zeros(1, 1, num_image, length, dtype=torch.bool, device=device)
    cols = torch.arange(length, device=device)
    visible = cols[None, :] < _prefix(prefix_length, device)[:, None]  # [B, L]
    return visible[:, None, None, :].expand(-1, 1, num_image, length)


def key_mask(mask: torch.Tensor | None) -> torch.Tensor | None:
    """[B, N] 1 = real -> [B, 1, 1, N] key mask (or None when every token is real)."""
    return None if mask is None else padding_mask(mask)


def joint_mask(
    mode: AttentionMode,
    num_text: int,
    num_image: int,
    text_mask: torch.Tensor | None,
    image_mask: torch.Tensor | None,
    prefix_length: torch.Tensor | int | None,
    device: torch.device,
) -> torch.Tensor:
    """Self-attention mask over the joint sequence [text; image]: [B|1, 1, L+N, L+N]."""
    tt = text_self_mask(mode, num_text, None, prefix_length, device)
    it = image_to_text_mask(mode, num_image, num_text, prefix_length, device)
    batch = max(tt.shape[0], it.shape[0])
    tt = tt.expand(batch, 1, num_text, num_text)
    it = it.expand(batch, 1, num_image, num_text)
    ti = torch.ones(batch, 1, num_text, num_image, dtype=torch.bool, device=device)
    ii = torch.ones(batch, 1, num_image, num_image, dtype=torch.bool, device=device)
    mask = torch.cat([torch.cat([tt, ti], dim=3), torch.cat([it, ii], dim=3)], dim=2)
    if text_mask is not None or image_mask is not None:
        tm = text_mask.bool() if text_mask is not None else None
        im = image_mask.bool() if image_mask is not None else None
        size = (tm if tm is not None else im).shape[0]  # type: ignore[union-attr]
        if tm is None:
            tm = torch.ones(size, num_text, dtype=torch.bool, device=device)
        if im is None:
            im = torch.ones(size, num_image, dtype=torch.bool, device=device)
        mask = mask & padding_mask(torch.cat([tm, im], dim=1))
    return with_self(mask)


def real_tokens(mask: torch.Tensor | None, batch: int, length: int, device: torch.device) -> torch.Tensor:
    """[B, L] boolean "is a real token" (all True when ``mask`` is None)."""
    if mask is None:
        return torch.ones(batch, length, dtype=torch.bool, device=device)
    return mask.bool()


def cached_step_mask(cache: KVCache, new_mask: torch.Tensor | None, batch: int, length: int, device: torch.device) -> torch.Tensor:
    """Self-attention mask for ``length`` new text tokens appended to ``cache``: [B, 1, L, S+L].

    New tokens see every real cached key (image, prompt, earlier tokens) and each other causally;
    the new positions are recorded in the cache's key mask for the next step.
    """
    if cache.key_mask is None:
        raise ValueError("the cache is empty: run the prefill pass (image + prompt) first")
    past = cache.key_mask[:, None, None, :].expand(batch, 1, length, cache.length)
    new = real_tokens(new_mask, batch, length, device)
    own = with_self(causal_mask(length, device) & padding_mask(new)).expand(batch, 1, length, length)
    cache.extend_keys(new)
    return torch.cat([past, own], dim=3)


def cross_decoding_inputs(
    fusion: Fusion, image: EncoderOutput | None, text: EncoderOutput, mode: AttentionMode | None,
    prefix_length: torch.Tensor | None, cache: KVCache,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, bool]:
    """(projected text, self-attention mask, image context, is-prefill) for a cached pass of a
    decoder that cross-attends to the image (BLIP, CoCa; they own ``text_proj``/``image_proj``).

    On the prefill: the mode's text mask and the projected image, whose keys the layers then
    cache; on later steps: the step mask and no context (the cache holds it).
    """
    t = fusion.text_proj(text.tokens)  # type: ignore[operator]
    batch, length = t.shape[:2]
    if not cache.empty:
        return t, cached_step_mask(cache, text.mask, batch, length, t.device), None, False
    if image is None:
        raise ValueError("the first (prefill) pass needs the image")
    mode = fusion.resolve_mode(mode, prefix_length)
    mask = text_self_mask(mode, length, text.mask, prefix_length, t.device)
    cache.extend_keys(real_tokens(text.mask, batch, length, t.device))
    cache.context_mask = key_mask(image.mask)
    return t, mask, fusion.image_proj(image.tokens), True  # type: ignore[operator]


def check_stack(depth: int, width: int | None, num_heads: int, *, min_depth: int = 1, name: str = "depth") -> None:
    """Validation every fusion config shares: enough layers, and heads that divide the width."""
    if depth < min_depth:
        raise ValueError(f"{name} must be at least {min_depth}")
    if width is not None and width % num_heads != 0:
        raise ValueError(f"width {width} is not divisible by num_heads {num_heads}")
