"""Any timm backbone as an image encoder: token grids from `forward_features`, pooling from its head.

The lecture's comparison of vision encoders (METER: DeiT, BEiT, ViT, CLIP, VOLO, CaiT, Swin) is a
one-line config change here. timm's uniform API does the work: `forward_features` gives
[B, N, D] tokens (with `num_prefix_tokens` [CLS]/distillation tokens first) for transformer-like
models and a feature map for CNN/hierarchical ones, NCHW or NHWC as the model's `output_fmt` says;
`forward_head(pre_logits=True)` is the model's own pooling (CLS, average + fc_norm, ...). Compare
open_clip's `TimmModel` (src/open_clip/timm_model.py), which this follows for locking.

Weights are never downloaded: `pretrained=True` loads the local `checkpoint_path` (safetensors or
torch file) through timm's own pretrained loader, so its checkpoint filters still run (original
key layouts, position-embedding resizing to `image_size`, classifier removal).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from vlp.encoders.base import Encoder, EncoderOutput

__all__ = ["TimmEncoder", "TimmEncoderConfig", "build_timm_encoder", "create_timm_trunk"]

# Modules that timm models use only in `forward_head` (its naming convention across families):
# bypassed by pool="cls"/"mean", so their parameters are frozen there (no optimizer state, no
# DDP "parameter received no gradient" failure) but kept, so timm checkpoints still load strictly.
_HEAD_MODULES = ("fc_norm", "attn_pool", "head")


@dataclass
class TimmEncoderConfig:
    kind: str = "timm"
    model_name: str = "vit_tiny_patch16_224"
    pretrained: bool = False  # True: load `checkpoint_path` (a local file; nothing is downloaded)
    checkpoint_path: str | None = None
    # Input resolution. Passed to timm as `img_size` only for models whose pretrained config says
    # `fixed_input_size` (ViT, Swin, BEiT, ...): CNNs take any size and have no such argument.
    image_size: int = 224
    # "model": timm's own head pooling (forward_head(pre_logits=True)); "cls": first prefix token;
    # "mean": mean of the non-prefix tokens (or of the flattened feature map).
    pool: Literal["model", "cls", "mean"] = "model"
    # Extra timm.create_model arguments: depth/embed_dim/... for tiny test models, drop_path_rate,
    # patch_drop_rate (timm's own patch dropout for its ViTs).
    model_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.pretrained and not self.checkpoint_path:
            raise ValueError("pretrained=True needs checkpoint_path: vlp never downloads weights")
        if self.checkpoint_path and not self.pretrained:
            raise ValueError("checkpoint_path is set but pretrained=False: set pretrained=True to load it")
        for key in ("img_size", "num_classes", "pretrained"):
            if key in self.model_kwargs:
                raise ValueError(f"model_kwargs must not set {key!r}: use the config field instead")


def _import_timm() -> Any:
    import timm

    return timm


def create_timm_trunk(cfg: TimmEncoderConfig, load_weights: bool = True) -> nn.Module:
    """`timm.create_model` without classifier; loads `cfg.checkpoint_path` when pretrained and asked to."""
    timm = _import_timm()
    kwargs: dict[str, Any] = dict(cfg.model_kwargs, num_classes=0)
    pretrained_cfg = timm.models.get_pretrained_cfg(cfg.model_name)
    if pretrained_cfg is not None and pretrained_cfg.fixed_input_size:
        kwargs["img_size"] = cfg.image_size
    if cfg.pretrained and load_weights:
        path = Path(str(cfg.checkpoint_path))
        if not path.is_file():
            raise FileNotFoundError(f"timm checkpoint not found: {path} (vlp never downloads weights)")
        # `file` outranks url/hub in timm's source resolution once `source` is not 'hf-hub'.
        overlay = {"file": str(path), "source": ""}
        return timm.create_model(cfg.model_name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    return timm.create_model(cfg.model_name, pretrained=False, **kwargs)


class TimmEncoder(Encoder):
    """Adapter: tokens [B, N, D] (prefix tokens first), pooled [B, D], width = `trunk.num_features`."""

    def __init__(self, cfg: TimmEncoderConfig, trunk: nn.Module | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.trunk = trunk if trunk is not None else create_timm_trunk(cfg, load_weights=False)
        self.width = int(self.trunk.num_features)
        # Token-output models declare how many [CLS]/distillation/register tokens lead the sequence.
        self.num_prefix_tokens = int(getattr(self.trunk, "num_prefix_tokens", 0) or 0)
        fmt = getattr(self.trunk, "output_fmt", "NCHW")
        self.channels_last = str(getattr(fmt, "value", fmt)) == "NHWC"
        if cfg.pool == "cls" and self.num_prefix_tokens == 0:
            raise ValueError(f"timm model {cfg.model_name!r} has no prefix ([CLS]) token: use pool='model' or 'mean'")
        head_width = int(getattr(self.trunk, "head_hidden_size", self.width) or self.width)
        if cfg.pool == "model" and head_width != self.width:
            raise ValueError(
                f"timm model {cfg.model_name!r} pools to {head_width} features but its tokens have {self.width}: "
                "use pool='cls' or 'mean'"
            )
        self._bypassed: list[nn.Parameter] = []
        if cfg.pool != "model":
            for name in _HEAD_MODULES:
                module = getattr(self.trunk, name, None)
                if isinstance(module, nn.Module):
                    self._bypassed += list(module.parameters())
            for param in self._bypassed:
                param.requires_grad_(False)

    def no_weight_decay(self) -> set[str]:
        names = self.trunk.no_weight_decay() if hasattr(self.trunk, "no_weight_decay") else set()
        return {f"trunk.{n}" for n in names}

    def lock_groups(self) -> list[list[nn.Module | nn.Parameter]]:
        """timm's own layer groups (`group_matcher`, as open_clip's lock), minus bypassed head parameters."""
        from timm.models import group_parameters

        grouped = group_parameters(self.trunk, self.trunk.group_matcher())
        bypassed = {id(p) for p in self._bypassed}
        groups: list[list[nn.Module | nn.Parameter]] = []
        for _, names in sorted(grouped.items()):
            params = [self.trunk.get_parameter(n) for n in names]
            groups.append([p for p in params if id(p) not in bypassed])
        return groups

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        try:
            self.trunk.set_grad_checkpointing(enabled)
        except (AssertionError, NotImplementedError, AttributeError) as err:
            raise NotImplementedError(f"timm model {self.cfg.model_name!r} has no gradient checkpointing") from err

    def forward(self, pixels: torch.Tensor) -> EncoderOutput:
        features = self.trunk.forward_features(pixels)
        prefix = 0
        if features.ndim == 4:  # feature map -> tokens in row-major (h, w) order
            grid = features if self.channels_last else features.permute(0, 2, 3, 1)
            tokens = grid.flatten(1, 2)  # [B, H*W, C]
        elif features.ndim == 3:
            tokens, prefix = features, self.num_prefix_tokens
        else:
            raise ValueError(f"timm model {self.cfg.model_name!r}: unexpected features of shape {tuple(features.shape)}")
        if self.cfg.pool == "model":
            pooled = self.trunk.forward_head(features, pre_logits=True)
        elif self.cfg.pool == "cls":
            pooled = tokens[:, 0]
        else:
            pooled = tokens[:, prefix:].mean(dim=1)
        return EncoderOutput(tokens=tokens, pooled=pooled)


def build_timm_encoder(cfg: TimmEncoderConfig) -> TimmEncoder:
    """The registered builder: creates the timm model, loading local weights when `pretrained`."""
    return TimmEncoder(cfg, trunk=create_timm_trunk(cfg, load_weights=True))
