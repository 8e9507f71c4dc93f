"""Composite image-text models and their named presets."""

from vlp.models.image_text import HeadsConfig, ImageTextModel, ModelConfig, ModelOutput, build_model, count_parameters
from vlp.models.presets import FAMILIES, MODEL_PRESETS, REGION_FAMILIES, SIZES, family_of, model_preset

__all__ = ["FAMILIES", "REGION_FAMILIES", "SIZES", "family_of", "MODEL_PRESETS", "HeadsConfig", "ImageTextModel", "ModelConfig", "ModelOutput", "build_model", "count_parameters", "model_preset"]
