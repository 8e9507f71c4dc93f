"""vlp: vision-language (image-text) pre-training with every design of the field as a swappable part."""

__version__ = "0.1.0"

from vlp.pretrained import export_model, load_pretrained, save_pretrained  # noqa: E402  (public API)

__all__ = ["__version__", "export_model", "load_pretrained", "save_pretrained"]
