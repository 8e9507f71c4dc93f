"""vlp's own pretrained format: one directory that loads without the training code.

  model.safetensors   the weights (safetensors: no pickle; tied weights stored once)
  config.json         {"format": "vlp-pretrained-1", "component": "model" | "text_encoder" |
                      "image_encoder", "config": the component's resolved config}
  tokenizer.json + vlp_tokenizer.json   the tokenizer, when there is one

`export_model` writes it from a training run (its newest valid checkpoint); `save_pretrained`
from any model in memory (e.g. an imported CLIP); `load_exported` reads it with the model library
only (no Trainer, no tasks). Configs that point at external weight files (`pretrained`,
`checkpoint_path`) are rewritten to point nowhere: the weights are in this directory.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from torch import nn

from vlp.config import from_dict, to_dict
from vlp.data.tokenizer import META_FILE, TextTokenizer
from vlp.encoders import (
    HFTextConfig,
    TextTransformer,
    TextTransformerConfig,
    TimmEncoderConfig,
    ViTConfig,
    VisionTransformer,
    build_image_encoder,
    build_text_encoder,
)
from vlp.models import ImageTextModel, ModelConfig, build_model
from vlp.pretrained.common import PretrainedError, read_json

__all__ = ["FORMAT", "export_model", "load_exported", "save_pretrained"]

FORMAT = "vlp-pretrained-1"
WEIGHTS, CONFIG = "model.safetensors", "config.json"
_COMPONENTS: dict[str, tuple[type, Any]] = {
    "model": (ModelConfig, build_model),
    "text_encoder": (TextTransformerConfig, build_text_encoder),
    "image_encoder": (ViTConfig, build_image_encoder),
}


def _self_contained(cfg: Any) -> Any:
    """The config with references to external weight files removed (the weights travel with it)."""
    if isinstance(cfg, ModelConfig):
        return replace(cfg, image_encoder=_self_contained(cfg.image_encoder), text_encoder=_self_contained(cfg.text_encoder))
    if isinstance(cfg, TextTransformerConfig) and cfg.pretrained:
        return replace(cfg, pretrained="")
    if isinstance(cfg, TimmEncoderConfig) and cfg.pretrained:
        return replace(cfg, pretrained=False, checkpoint_path=None)
    if isinstance(cfg, HFTextConfig):
        raise PretrainedError("a model with an 'hf' text encoder cannot be exported self-contained (its architecture lives in the HF directory)")
    return cfg


def _component(model: nn.Module) -> str:
    for name, kind in (("model", ImageTextModel), ("text_encoder", TextTransformer), ("image_encoder", VisionTransformer)):
        if isinstance(model, kind):
            return name
    raise PretrainedError(f"cannot save a {type(model).__name__}: vlp's format holds an ImageTextModel, TextTransformer or VisionTransformer")


def save_pretrained(model: nn.Module, tokenizer: TextTokenizer | None, out_dir: str | os.PathLike[str]) -> Path:
    """Write `model` (+ tokenizer) in vlp's format into `out_dir`; returns the directory."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    component = _component(model)
    meta = {"format": FORMAT, "component": component, "config": to_dict(_self_contained(model.cfg))}
    save_model(model, str(out / WEIGHTS))
    (out / CONFIG).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    if tokenizer is not None:
        tokenizer.save(out)
    return out


def export_model(run_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], checkpoint: str | os.PathLike[str] | None = None) -> Path:
    """A training run's model (newest valid checkpoint, or `checkpoint`) -> vlp's format in `out_dir`.

    Only the model is exported: momentum copies, queues and optimiser state stay with the run.
    """
    from vlp.experiment.run import load_trained_model  # the training side is needed to read a run, not to load the export

    _, tokenizer, model = load_trained_model(Path(run_dir), Path(checkpoint) if checkpoint else None)
    return save_pretrained(model, tokenizer, out_dir)


def load_exported(path: str | os.PathLike[str]) -> tuple[nn.Module, TextTokenizer | None]:
    """(model in eval mode, tokenizer or None) from a directory in vlp's format."""
    root = Path(path)
    meta = read_json(root / CONFIG)
    if meta.get("format") != FORMAT:
        raise PretrainedError(f"{root / CONFIG}: format {meta.get('format')!r} is not {FORMAT!r} (is this a Hugging Face directory?)")
    if meta.get("component") not in _COMPONENTS:
        raise PretrainedError(f"{root / CONFIG}: unknown component {meta.get('component')!r} (expected one of {sorted(_COMPONENTS)})")
    cls, build = _COMPONENTS[meta["component"]]
    model = build(from_dict(cls, meta["config"]))
    try:
        missing, unexpected = load_model(model, str(root / WEIGHTS), strict=False)
    except (SafetensorError, OSError) as err:
        raise PretrainedError(f"cannot read {root / WEIGHTS}: {err}") from err
    except RuntimeError as err:  # shape mismatches, as torch words them (key and both shapes)
        raise PretrainedError(f"{root / WEIGHTS} does not fit its config.json: {err}") from err
    if missing or unexpected:
        raise PretrainedError(
            f"{root / WEIGHTS} does not fit its config.json: missing keys {sorted(missing)[:10]}, unexpected keys {sorted(unexpected)[:10]}"
        )
    tokenizer = TextTokenizer.load(root) if (root / META_FILE).is_file() else None
    return model.eval(), tokenizer
