"""open_clip / OpenAI CLIP state dicts -> a vlp CLIP model (`clip_arch`).

The file is a safetensors file or a torch file read with ``weights_only=True`` (no pickled code);
OpenAI's TorchScript archives are not read. The architecture comes from open_clip's model-config
JSON (``embed_dim``, ``quick_gelu``, ``vision_cfg``, ``text_cfg``: the files in open_clip's
model_configs/) when given, otherwise it is inferred from the tensor shapes as open_clip's
`build_model_from_openai_state_dict` does (64-wide heads, QuickGELU unless told otherwise).
open_clip's own ``in_proj`` already fuses q, k, v in our order; its projections are stored as
``[width, embed]`` matrices (x @ proj), so they are transposed into our ``nn.Linear`` weights.
Text is pooled at the highest token id in open_clip (``argmax``: CLIP's EOT has the largest id) and
at the last real token here: the same position for texts from `clip_tokenizer`.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from vlp.data.tokenizer import TextTokenizer
from vlp.encoders.convert import StateDict, load_state_dict_file
from vlp.models import ImageTextModel, ModelConfig, build_model
from vlp.pretrained.clip_arch import clip_model_config
from vlp.pretrained.common import PretrainedError, load_converted, read_json
from vlp.pretrained.tokenizers import clip_tokenizer

__all__ = ["clip_config_from_open_clip", "clip_state_dict_from_open_clip", "load_open_clip"]

_BLOCK = {
    "ln_1": "norm1",
    "ln_2": "norm2",
    "attn.in_proj": "attn.qkv",
    "attn.out_proj": "attn.proj",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
}
_DIRECT = {
    "visual.conv1.weight": "image_encoder.patch_embed.proj.weight",
    "visual.ln_pre.weight": "image_encoder.norm_pre.weight",
    "visual.ln_pre.bias": "image_encoder.norm_pre.bias",
    "visual.ln_post.weight": "image_encoder.norm.weight",
    "visual.ln_post.bias": "image_encoder.norm.bias",
    "token_embedding.weight": "text_encoder.embeddings.word_embeddings.weight",
    "positional_embedding": "text_encoder.embeddings.position_embeddings.weight",
    "ln_final.weight": "text_encoder.final_norm.weight",
    "ln_final.bias": "text_encoder.final_norm.bias",
}
_METADATA = {"input_resolution", "context_length", "vocab_size", "attn_mask"}  # OpenAI extras, not weights
# open_clip options whose non-default values change the architecture beyond what vlp reproduces.
_VISION_DEFAULTS = {"ls_init_value": None, "attentional_pool": False, "no_ln_pre": False, "pool_type": "tok",
                    "final_ln_after_pool": False, "timm_model_name": None, "pos_embed_type": "learnable"}
_TEXT_DEFAULTS = {"ls_init_value": None, "embed_cls": False, "no_causal_mask": False, "pool_type": "argmax",
                  "final_ln_after_pool": False, "proj_bias": False, "hf_model_name": None, "proj_type": "linear"}


def _check_supported(section: Mapping[str, Any], defaults: Mapping[str, Any], name: str) -> None:
    for key, default in defaults.items():
        if section.get(key, default) != default:
            raise PretrainedError(f"open_clip {name}.{key}={section[key]!r} is not supported by vlp's CLIP (only {default!r})")


def clip_config_from_open_clip(state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any] | None = None,
                               quick_gelu: bool | None = None) -> ModelConfig:
    """Our `ModelConfig` from open_clip's model-config dict, or inferred from the weights' shapes."""
    if "visual.proj" not in state_dict:
        raise PretrainedError("open_clip weights without visual.proj: only ViT image towers are supported (no ResNet/timm towers)")
    config = dict(config or {})
    vision_cfg, text_cfg = dict(config.get("vision_cfg", {})), dict(config.get("text_cfg", {}))
    _check_supported(vision_cfg, _VISION_DEFAULTS, "vision_cfg")
    _check_supported(text_cfg, _TEXT_DEFAULTS, "text_cfg")
    conv = state_dict["visual.conv1.weight"]
    vision_width, patch = int(conv.shape[0]), int(conv.shape[-1])
    grid = round((state_dict["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    vision_depth = len({k.split(".")[3] for k in state_dict if k.startswith("visual.transformer.resblocks.")})
    text_width = int(state_dict["ln_final.weight"].shape[0])
    text_depth = len({k.split(".")[2] for k in state_dict if k.startswith("transformer.resblocks.")})
    vision_mlp = int(state_dict["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0])
    text_mlp = int(state_dict["transformer.resblocks.0.mlp.c_fc.weight"].shape[0])
    if config:  # a declared architecture must agree with the tensors
        declared = {"vision width": (vision_cfg.get("width"), vision_width), "vision layers": (vision_cfg.get("layers"), vision_depth),
                    "patch size": (vision_cfg.get("patch_size"), patch), "text width": (text_cfg.get("width"), text_width),
                    "text layers": (text_cfg.get("layers"), text_depth)}
        wrong = [f"{name} {want} (config) vs {have} (weights)" for name, (want, have) in declared.items() if want is not None and want != have]
        if wrong:
            raise PretrainedError("open_clip config does not match the weights: " + "; ".join(wrong))
    if quick_gelu is None:
        quick_gelu = bool(config.get("quick_gelu", True)) if config else True  # OpenAI's weights use QuickGELU
    head_width = int(vision_cfg.get("head_width", 64))
    text_heads = int(text_cfg.get("heads", text_width // 64))
    if vision_width % head_width or text_heads < 1 or text_width % text_heads:
        raise PretrainedError(
            f"open_clip: cannot split vision width {vision_width} into {head_width}-wide heads or text width {text_width} "
            f"into {text_heads} heads; pass open_clip's model config (vision_cfg.head_width, text_cfg.heads)"
        )
    logit_scale = float(state_dict["logit_scale"]) if "logit_scale" in state_dict else math.log(1 / 0.07)
    return clip_model_config(
        image_size=grid * patch, patch_size=patch, vision_width=vision_width, vision_depth=vision_depth,
        vision_heads=vision_width // head_width, vision_mlp=vision_mlp,
        vocab_size=int(state_dict["token_embedding.weight"].shape[0]),
        context_length=int(state_dict["positional_embedding"].shape[0]), text_width=text_width, text_depth=text_depth,
        text_heads=text_heads, text_mlp=text_mlp,
        embed_dim=int(state_dict["text_projection"].shape[1]), act="quick_gelu" if quick_gelu else "gelu",
        logit_scale=logit_scale, source="open_clip",
    )


def clip_state_dict_from_open_clip(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """open_clip / OpenAI CLIP names -> `ImageTextModel` names (unknown keys are passed through for
    `load_converted` to report)."""
    out: StateDict = {}
    for key, value in state_dict.items():
        block = re.match(r"(visual\.)?transformer\.resblocks\.(\d+)\.(ln_1|ln_2|attn\.in_proj|attn\.out_proj|mlp\.c_fc|mlp\.c_proj)[._](weight|bias)$", key)
        if key in _METADATA:
            continue
        if key in _DIRECT:
            out[_DIRECT[key]] = value
        elif block:
            tower = "image_encoder" if block.group(1) else "text_encoder"
            out[f"{tower}.blocks.blocks.{block.group(2)}.{_BLOCK[block.group(3)]}.{block.group(4)}"] = value
        elif key == "visual.class_embedding":
            out["image_encoder.cls_token"] = value.reshape(1, 1, -1)
        elif key == "visual.positional_embedding":
            out["image_encoder.pos_embed"] = value[None]
        elif key == "visual.proj":
            out["image_proj.weight"] = value.T.contiguous()
        elif key == "text_projection":
            out["text_proj.weight"] = value.T.contiguous()
        elif key == "logit_scale":
            out["log_logit_scale"] = value.reshape(())
        else:
            out[key] = value
    return out


def load_open_clip(
    path: str | os.PathLike[str],
    config: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    quick_gelu: bool | None = None,
    tokenizer: str | os.PathLike[str] | None = None,
) -> tuple[ImageTextModel, TextTokenizer | None]:
    """An open_clip checkpoint file -> (vlp model in eval mode, CLIP tokenizer or None).

    `config`: open_clip's model-config JSON (path or dict); `quick_gelu` overrides its activation
    (open_clip's ``-quickgelu`` model names); `tokenizer`: a directory with CLIP's vocab.json + merges.txt.
    """
    state_dict = load_state_dict_file(path)
    if any(k.startswith("module.") for k in state_dict):  # saved from DistributedDataParallel
        state_dict = {k.removeprefix("module."): v for k, v in state_dict.items()}
    if config is not None and not isinstance(config, Mapping):
        config = read_json(Path(config))
    if isinstance(config, Mapping) and "model_cfg" in config:  # open_clip's hub config.json wraps it
        config = config["model_cfg"]
    cfg = clip_config_from_open_clip(state_dict, config, quick_gelu)
    model = build_model(cfg)
    load_converted(model, clip_state_dict_from_open_clip(state_dict), "open_clip")
    return model.eval(), clip_tokenizer(tokenizer) if tokenizer is not None else None
