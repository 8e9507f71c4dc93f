"""Pretrained weights in and out: `load_pretrained(source, path)` -> (model, tokenizer), and export.

Sources (one module each; every importer is strict and has a parity test in tests/pretrained):
  hf-clip     a Hugging Face ``CLIPModel`` directory -> CLIP `ImageTextModel` + CLIP BPE tokenizer
  hf-blip     Hugging Face BLIP retrieval (ITC + ITM) or captioning (LM) directory -> vlp BLIP
  hf-git      a Hugging Face ``GitForCausalLM`` directory -> vlp GIT (captioning / VQA by generation)
  open_clip   an open_clip / OpenAI CLIP state dict file (+ its model-config JSON) -> the same
  hf-text     a Hugging Face BERT / RoBERTa / MiniLM directory -> our `TextTransformer` + its tokenizer
  timm        a timm ViT weights file -> our `VisionTransformer` (or the ``timm`` adapter); no tokenizer
  vlp         a directory written by `export_model` / `save_pretrained` -> whatever it holds
Nothing is downloaded and nothing is unpickled: safetensors, or torch files with weights_only=True.
"""

from __future__ import annotations

import importlib
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


def _lazy(module: str, function: str, with_tokenizer: bool = True) -> Loader:
    """A loader that imports its module on first use (transformers/timm stay unimported until needed)."""

    def load(path: str | os.PathLike[str], **kwargs: Any) -> tuple[nn.Module, TextTokenizer | None]:
        result = getattr(importlib.import_module(f"vlp.pretrained.{module}"), function)(path, **kwargs)
        return result if with_tokenizer else (result, None)

    load.__name__ = function
    return load


for _name, _module, _function, _tokenizer in (
    ("hf-clip", "hf_clip", "load_hf_clip", True),
    ("hf-blip", "hf_blip", "load_hf_blip", True),
    ("hf-git", "hf_git", "load_hf_git", True),
    ("open_clip", "open_clip", "load_open_clip", True),
    ("hf-text", "hf_text", "load_hf_text", True),
    ("timm", "timm", "load_timm", False),
    ("vlp", "export", "load_exported", True),
):
    PRETRAINED_SOURCES.register(_name)(_lazy(_module, _function, _tokenizer))


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
