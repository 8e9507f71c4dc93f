"""timm ViT weights -> our `VisionTransformer`, or any timm model through the ``timm`` adapter.

Two routes, both from a local weights file (safetensors, or a torch file read with weights_only):
  native   our ViT, whose config is read off the timm model's own modules (built on the meta
           device: no memory, no init) so that every architectural choice -- patch size, heads,
           pre-norm, QuickGELU, eps, patch bias -- comes from timm itself, never from the name
  adapter  `TimmEncoder` around the timm model, loaded by timm's pretrained loader
The native route is strict: a timm variant that our ViT cannot express (register tokens, layer
scale, average pooling with fc_norm, no class token) fails with the offending keys or option.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from vlp.encoders import Encoder, TimmEncoderConfig, ViTConfig, VisionTransformer, build_timm_encoder
from vlp.encoders.convert import load_state_dict_file, vit_state_dict_from_timm
from vlp.encoders.image.timm_adapter import create_timm_trunk
from vlp.pretrained.clip_arch import mlp_ratio
from vlp.pretrained.common import PretrainedError, load_converted

__all__ = ["load_timm", "vit_config_from_timm"]


def vit_config_from_timm(model: nn.Module) -> ViTConfig:
    """Our `ViTConfig` for a (possibly meta-device) timm ``VisionTransformer`` instance."""
    from timm.layers import QuickGELU
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    name = type(model).__name__
    if not isinstance(model, TimmViT):
        raise PretrainedError(f"timm {name} is not a VisionTransformer: use adapter=True for other timm models")
    if getattr(model, "cls_token", None) is None or getattr(model, "reg_token", None) is not None or model.no_embed_class:
        raise PretrainedError("timm ViT without a class token, with register tokens or no_embed_class: use adapter=True")
    if model.global_pool != "token" or not isinstance(model.fc_norm, nn.Identity):
        raise PretrainedError(f"timm ViT with global_pool={model.global_pool!r} (and fc_norm): only 'token' pooling maps to ours")
    block = model.blocks[0]
    act = block.mlp.act
    if isinstance(act, QuickGELU):
        act_name = "quick_gelu"
    elif isinstance(act, nn.GELU) and act.approximate == "none":
        act_name = "gelu"
    else:
        raise PretrainedError(f"timm ViT activation {type(act).__name__} is not supported (GELU or QuickGELU)")
    width = int(model.embed_dim)
    img, patch = model.patch_embed.img_size, model.patch_embed.patch_size
    if img[0] != img[1] or patch[0] != patch[1]:
        raise PretrainedError(f"timm ViT with non-square image {img} or patch {patch} sizes")
    return ViTConfig(
        image_size=int(img[0]), patch_size=int(patch[0]), width=width, depth=len(model.blocks),
        num_heads=int(block.attn.num_heads), mlp_ratio=mlp_ratio(width, int(block.mlp.fc1.out_features), "timm ViT"),
        qkv_bias=block.attn.qkv.bias is not None, pool="cls", pre_norm=not isinstance(model.norm_pre, nn.Identity),
        patch_bias=model.patch_embed.proj.bias is not None, act=act_name, eps=float(model.norm.eps),
    )


def load_timm(
    path: str | os.PathLike[str], model_name: str, image_size: int = 224, adapter: bool = False, **model_kwargs: Any
) -> Encoder:
    """A timm weights file for `model_name` -> our ViT (default) or the timm adapter, in eval mode.

    `model_kwargs` go to ``timm.create_model`` (e.g. depth/embed_dim for custom sizes).
    """
    cfg = TimmEncoderConfig(model_name=model_name, pretrained=True, checkpoint_path=str(path), image_size=image_size,
                            pool="cls" if not adapter else "model", model_kwargs=dict(model_kwargs))
    if adapter:
        return build_timm_encoder(cfg).eval()
    with torch.device("meta"):
        reference = create_timm_trunk(cfg, load_weights=False)
    model = VisionTransformer(vit_config_from_timm(reference))
    try:
        converted = vit_state_dict_from_timm(load_state_dict_file(path))
    except ValueError as err:
        raise PretrainedError(str(err)) from err
    load_converted(model, converted, f"timm {model_name}")
    return model.eval()
