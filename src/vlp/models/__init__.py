"""Composite image-text models and their named presets."""

from vlp.models.image_text import ImageTextModel, ModelConfig, ModelOutput, build_model, count_parameters
from vlp.models.presets import MODEL_PRESETS, model_preset

__all__ = ["MODEL_PRESETS", "ImageTextModel", "ModelConfig", "ModelOutput", "build_model", "count_parameters", "model_preset"]
