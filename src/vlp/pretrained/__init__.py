"""Pretrained weights in and out: `load_pretrained(source, path)` -> (model, tokenizer), and export.

Sources (one module each; every importer is strict and has a parity test in tests/pretrained):
  hf-clip     a Hugging Face ``CLIPModel`` directory -> CLIP `ImageTextModel` + CLIP BPE tokenizer
  hf-blip     Hugging Face BLIP retrieval (ITC + ITM) or captioning (LM) directory -> vlp BLIP
  open_clip   an open_clip / OpenAI CLIP state dict file (+ its model-config JSON) -> the same
  hf-text     a Hugging Face BERT / RoBERTa / MiniLM directory -> our `TextTransformer` + its tokenizer
  timm        a timm ViT weights file -> our `VisionTransformer` (or the ``timm`` adapter); no tokenizer
  vlp         a directory written by `export_model` / `save_pretrained` -> whatever it holds
Nothing is downloaded and nothing is unpickled: safetensors, or torch files with weights_only=True.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from torch import nn

from vlp.data.tokenizer import TextTokenizer
from vlp.pretrained.common import PretrainedError
from vlp.registry import Registry

__all__ = ["PRETRAINED_SOURCES", "PretrainedError", "export_model", "load_pretrained", "save_pretrained"]

Loader = Callable[..., tuple[nn.Module, TextTokenizer | None]]
PRETRAINED_SOURCES: Registry = Registry("pretrained source")


@PRETRAINED_SOURCES.register("hf-clip")
def _hf_clip(path: str | os.PathLike[str], **kwargs: Any) -> tuple[nn.Module, TextTokenizer | None]:
    from vlp.pretrained.hf_clip import load_hf_clip

    return load_hf_clip(path, **kwargs)


@PRETRAINED_SOURCES.register("hf-blip")
def _hf_blip(path: str | os.PathLike[str], **kwargs: Any) -> tuple[nn.Module, TextTokenizer | None]:
    from vlp.pretrained.hf_blip import load_hf_blip

    return load_hf_blip(path, **kwargs)


@PRETRAINED_SOURCES.register("open_clip")
def _open_clip(path: str | os.PathLike[str], **kwargs: Any) -> tuple[nn.Module, TextTokenizer | None]:
    from vlp.pretrained.open_clip import load_open_clip

    return load_open_clip(path, **kwargs)


@PRETRAINED_SOURCES.register("hf-text")
def _hf_text(path: str | os.PathLike[str], **kwargs: Any) -> tuple[nn.Module, TextTokenizer | None]:
    from vlp.pretrained.hf_text import load_hf_text

    return load_hf_text(path, **kwargs)


@PRETRAINED_SOURCES.register("timm")
def _timm(path: str | os.PathLike[str], **kwargs: Any) -> tuple[nn.Module, TextTokenizer | None]:
    from vlp.pretrained.timm import load_timm

    return load_timm(path, **kwargs), None


@PRETRAINED_SOURCES.register("vlp")
def _vlp(path: str | os.PathLike[str], **kwargs: Any) -> tuple[nn.Module, TextTokenizer | None]:
    from vlp.pretrained.export import load_exported

    return load_exported(path, **kwargs)


def load_pretrained(source: str, path: str | os.PathLike[str], **kwargs: Any) -> tuple[nn.Module, TextTokenizer | None]:
    """(model in eval mode, its tokenizer or None) from local weights of a named source format.

    Extra keyword arguments go to the source's loader (e.g. ``config=`` for open_clip,
    ``model_name=`` for timm). Unknown sources raise with the registered names.
    """
    loader: Loader = PRETRAINED_SOURCES.get(source)
    return loader(path, **kwargs)


def export_model(*args: Any, **kwargs: Any) -> Any:
    """See `vlp.pretrained.export.export_model` (imported lazily: it reads training checkpoints)."""
    from vlp.pretrained.export import export_model as export

    return export(*args, **kwargs)


def save_pretrained(*args: Any, **kwargs: Any) -> Any:
    """See `vlp.pretrained.export.save_pretrained`."""
    from vlp.pretrained.export import save_pretrained as save

    return save(*args, **kwargs)
