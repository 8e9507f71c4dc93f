"""Multi-modal fusion modules, one registry entry per architecture kind.

| kind                      | papers                           | text sees image via          | modes                  |
|---------------------------|----------------------------------|------------------------------|------------------------|
| none                      | CLIP, ALIGN (dual encoder)       | -- (only the ITC dot product) | --                     |
| single_stream             | UNITER, OSCAR, VisualBERT, ViLT  | joint self-attention         | all                    |
| unified_seq2seq           | VLP / UniLM                      | joint self-attention         | all (bidir. default)   |
| self_attention_decoder    | GIT                              | joint self-attention         | all (seq2seq default)  |
| cross_attention           | ALBEF, BLIP ITM, METER one-way   | cross-attention              | all                    |
| cross_attention_decoder   | CoCa, BLIP captioner             | cross-attention              | causal, seq2seq        |
| co_attention              | LXMERT, ViLBERT, METER           | cross-attention, both ways   | bidirectional          |
| unified                   | UFO, VLMo (experts)              | joint self-attention, shared | all                    |
| blip_text                 | BLIP (shared enc./ITM enc./dec.) | cross-attention              | bidirectional, causal  |

``build_fusion(cfg, image_width, text_width)`` builds one (``None`` for ``none``); every class can
also be constructed by hand with the same three arguments.
"""

from __future__ import annotations

from dataclasses import dataclass

from vlp.fusion.base import ATTENTION_MODES, AttentionMode, Fusion, FusionOutput
from vlp.fusion.blip import BLIPTextConfig, BLIPTextTransformer
from vlp.fusion.co_attention import CoAttentionConfig, CoAttentionFusion
from vlp.fusion.cross_attention import CrossAttentionFusion, CrossAttentionFusionConfig
from vlp.fusion.decoder import CrossAttentionDecoder, CrossAttentionDecoderConfig
from vlp.fusion.single_stream import (
    SelfAttentionDecoderConfig,
    SingleStreamConfig,
    SingleStreamFusion,
    UnifiedSeq2SeqConfig,
)
from vlp.fusion.unified import UnifiedConfig, UnifiedImageEncoder, UnifiedTextEncoder, UnifiedTransformer
from vlp.registry import Registry


@dataclass
class NoFusionConfig:
    """Dual encoder (CLIP/ALIGN): image and text meet only in the contrastive loss."""

    kind: str = "none"


FUSIONS: Registry = Registry("fusion")


@FUSIONS.register("none", config=NoFusionConfig)
def _no_fusion(cfg: NoFusionConfig, image_width: int, text_width: int) -> None:
    return None


FUSIONS.register("single_stream", config=SingleStreamConfig)(SingleStreamFusion)
FUSIONS.register("unified_seq2seq", config=UnifiedSeq2SeqConfig)(SingleStreamFusion)
FUSIONS.register("self_attention_decoder", config=SelfAttentionDecoderConfig)(SingleStreamFusion)
FUSIONS.register("cross_attention", config=CrossAttentionFusionConfig)(CrossAttentionFusion)
FUSIONS.register("cross_attention_decoder", config=CrossAttentionDecoderConfig)(CrossAttentionDecoder)
FUSIONS.register("co_attention", config=CoAttentionConfig)(CoAttentionFusion)
FUSIONS.register("unified", config=UnifiedConfig)(UnifiedTransformer)
FUSIONS.register("blip_text", config=BLIPTextConfig)(BLIPTextTransformer)

FusionConfig = (
    NoFusionConfig
    | SingleStreamConfig
    | UnifiedSeq2SeqConfig
    | SelfAttentionDecoderConfig
    | CrossAttentionFusionConfig
    | CrossAttentionDecoderConfig
    | CoAttentionConfig
    | UnifiedConfig
    | BLIPTextConfig
)


def build_fusion(cfg: FusionConfig, image_width: int, text_width: int) -> Fusion | None:
    """The fusion module of ``cfg.kind`` for encoders of the given widths; None for ``none``."""
    return FUSIONS.get(cfg.kind)(cfg, image_width, text_width)  # type: ignore[no-any-return]


__all__ = [
    "ATTENTION_MODES",
    "BLIPTextConfig",
    "BLIPTextTransformer",
    "FUSIONS",
    "AttentionMode",
    "CoAttentionConfig",
    "CoAttentionFusion",
    "CrossAttentionDecoder",
    "CrossAttentionDecoderConfig",
    "CrossAttentionFusion",
    "CrossAttentionFusionConfig",
    "Fusion",
    "FusionConfig",
    "FusionOutput",
    "NoFusionConfig",
    "SelfAttentionDecoderConfig",
    "SingleStreamConfig",
    "SingleStreamFusion",
    "UnifiedConfig",
    "UnifiedImageEncoder",
    "UnifiedSeq2SeqConfig",
    "UnifiedTextEncoder",
    "UnifiedTransformer",
    "build_fusion",
]
