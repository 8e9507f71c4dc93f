"""vlp: vision-language (image-text) pre-training with every design of the field as a swappable part."""

__version__ = "0.1.0"
