"""Named model presets: Python functions returning configs (never YAML), registered by name.

Sizes: `tiny` for tests (seconds on CPU), `small` for CPU demos (minutes on 2 cores).
"""

from __future__ import annotations

from collections.abc import Callable

from vlp.encoders import TextTransformerConfig, ViTConfig
from vlp.models.image_text import ModelConfig
from vlp.registry import Registry

MODEL_PRESETS: Registry = Registry("model preset")


@MODEL_PRESETS.register("clip_tiny")
def clip_tiny() -> ModelConfig:
    """Dual encoder (CLIP) at test size: 32-wide, 1 layer each, 32-pixel images."""
    return ModelConfig(
        image_encoder=ViTConfig(image_size=32, patch_size=8, width=32, depth=1, num_heads=2),
        text_encoder=TextTransformerConfig(max_length=32, width=32, depth=1, num_heads=2),
        embed_dim=32,
    )


@MODEL_PRESETS.register("clip_small")
def clip_small() -> ModelConfig:
    """Dual encoder (CLIP) sized for a CPU demo on 64-pixel scenes (about 2.6 M parameters)."""
    return ModelConfig(
        image_encoder=ViTConfig(image_size=64, patch_size=8, width=128, depth=4, num_heads=4),
        text_encoder=TextTransformerConfig(max_length=40, width=128, depth=4, num_heads=4),
        embed_dim=128,
    )


def model_preset(name: str) -> ModelConfig:
    factory: Callable[[], ModelConfig] = MODEL_PRESETS.get(name)
    return factory()
