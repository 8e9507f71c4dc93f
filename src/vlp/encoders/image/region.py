"""Region features as image tokens (BUTD / UNITER / OSCAR / VinVL): detector outputs, not pixels.

The "sparse feature" family of the lecture: an object detector (Faster R-CNN on Visual Genome in
BUTD, Anderson et al. 2018; a ResNeXt-152 C4 detector in VinVL) proposes 10-100 regions per image
and their pooled features, computed once offline, are what the model sees. This encoder embeds
them as UNITER (Chen et al. 2020) does: Linear(feature) and Linear(7-d box geometry), each
LayerNorm-ed so that neither scale dominates, summed, LayerNorm-ed again. There is no transformer:
the fusion module does the rest.

Input contract: the forward takes a `RegionInputs` (features [B, R, F], boxes [B, R, 4] as
normalised x1, y1, x2, y2, mask [B, R]) instead of pixels; a batch for a region model carries it
as `batch.regions`. Images have different numbers of regions, padded to the longest and masked;
the output mask marks the real tokens. Precompute features with `vlp.encoders.image.region_extract`
and store them with `vlp.data.regions`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from vlp.layers import Transformer, TransformerBlock, padding_mask
from vlp.encoders.base import Encoder, EncoderOutput, masked_mean

__all__ = ["RegionEncoder", "RegionEncoderConfig", "RegionInputs", "box_geometry"]


@dataclass
class RegionInputs:
    """Padded region features of a batch. mask: 1 for real regions, 0 for padding (long or bool)."""

    features: torch.Tensor  # [B, R, F]
    boxes: torch.Tensor  # [B, R, 4] x1, y1, x2, y2 in [0, 1] (divided by image width / height)
    mask: torch.Tensor  # [B, R]

    def __post_init__(self) -> None:
        batch, regions = self.features.shape[:2] if self.features.ndim == 3 else (-1, -1)
        if tuple(self.boxes.shape) != (batch, regions, 4) or tuple(self.mask.shape) != (batch, regions):
            raise ValueError(
                f"RegionInputs shapes disagree: features {tuple(self.features.shape)}, boxes {tuple(self.boxes.shape)}, "
                f"mask {tuple(self.mask.shape)} (expected [B, R, F], [B, R, 4], [B, R])"
            )

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> RegionInputs:
        return RegionInputs(*(t.to(device, non_blocking=non_blocking) for t in (self.features, self.boxes, self.mask)))

    def pin_memory(self) -> RegionInputs:
        return RegionInputs(self.features.pin_memory(), self.boxes.pin_memory(), self.mask.pin_memory())

    @classmethod
    def pad(
        cls, features: Sequence[torch.Tensor], boxes: Sequence[torch.Tensor], max_regions: int | None = None,
    ) -> RegionInputs:
        """Stack per-image [R_i, F] features and [R_i, 4] boxes, padding to the longest (or truncating
        to `max_regions`, keeping the first regions: detectors list them by confidence)."""
        if len(features) != len(boxes) or not features:
            raise ValueError(f"need equally many feature and box tensors (got {len(features)} and {len(boxes)})")
        lengths = [min(len(f), max_regions) if max_regions is not None else len(f) for f in features]
        longest, dim = max(lengths), features[0].shape[-1]
        out_f = features[0].new_zeros(len(features), longest, dim)
        out_b = boxes[0].new_zeros(len(features), longest, 4)
        mask = torch.zeros(len(features), longest, dtype=torch.long, device=features[0].device)
        for i, (f, b, n) in enumerate(zip(features, boxes, lengths)):
            if len(f) != len(b):
                raise ValueError(f"image {i}: {len(f)} feature rows but {len(b)} boxes")
            out_f[i, :n], out_b[i, :n], mask[i, :n] = f[:n], b[:n], 1
        return cls(out_f, out_b, mask)


def box_geometry(boxes: torch.Tensor) -> torch.Tensor:
    """[..., 4] normalised x1, y1, x2, y2 -> [..., 7] (x1, y1, x2, y2, w, h, w*h), UNITER's position feature."""
    width = boxes[..., 2] - boxes[..., 0]
    height = boxes[..., 3] - boxes[..., 1]
    return torch.cat([boxes, width[..., None], height[..., None], (width * height)[..., None]], dim=-1)


@dataclass
class RegionEncoderConfig:
    kind: str = "region"
    feature_dim: int = 2048  # BUTD/VinVL detectors: 2048; torchvision's Faster R-CNN box head: 1024
    width: int = 192
    # An [IMG] token in front of the regions (a learned vector plus the whole-image box), giving
    # every image one real token even when it has no regions. UNITER and OSCAR have none.
    cls_token: bool = False
    # "mean" over the real regions: the [IMG] token is input-independent before fusion.
    pool: Literal["mean", "cls"] = "mean"
    eps: float = 1e-12  # BERT's LayerNorm eps, as the UNITER embedding it feeds
    dropout: float = 0.0
    # Self-attention layers over the regions before fusion: LXMERT's object-relationship encoder
    # (5 layers in LXMERT). 0 = embedding only (UNITER, OSCAR, VisualBERT: the fusion does the rest).
    depth: int = 0
    num_heads: int = 12

    def __post_init__(self) -> None:
        if self.pool == "cls" and not self.cls_token:
            raise ValueError("pool='cls' needs cls_token=True")
        if self.depth < 0 or (self.depth and self.width % self.num_heads != 0):
            raise ValueError(f"depth must be >= 0 and width {self.width} divisible by num_heads {self.num_heads}")


class RegionEncoder(Encoder):
    """RegionInputs -> tokens [B, (1 +) R, D] with mask [B, (1 +) R]; pooled is the masked mean (or [IMG])."""

    def __init__(self, cfg: RegionEncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.width = cfg.width
        self.img_linear = nn.Linear(cfg.feature_dim, cfg.width)
        self.img_layer_norm = nn.LayerNorm(cfg.width, eps=cfg.eps)
        self.pos_linear = nn.Linear(7, cfg.width)
        self.pos_layer_norm = nn.LayerNorm(cfg.width, eps=cfg.eps)
        self.norm = nn.LayerNorm(cfg.width, eps=cfg.eps)
        self.drop = nn.Dropout(cfg.dropout)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width)) if cfg.cls_token else None
        # BERT-style post-norm layers, as LXMERT's object-relationship encoder
        self.blocks = Transformer(
            [TransformerBlock(cfg.width, cfg.num_heads, norm_first=False, eps=cfg.eps, dropout=cfg.dropout) for _ in range(cfg.depth)]
        )
        for linear in (self.img_linear, self.pos_linear):
            nn.init.trunc_normal_(linear.weight, std=0.02)
            nn.init.zeros_(linear.bias)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)

    def no_weight_decay(self) -> set[str]:
        return {"cls_token"} if self.cls_token is not None else set()

    def lock_groups(self) -> list[list[nn.Module | nn.Parameter]]:
        return [[self]]

    def forward(self, regions: RegionInputs) -> EncoderOutput:
        if not isinstance(regions, RegionInputs):
            raise TypeError(f"the region encoder takes RegionInputs (batch.regions), not {type(regions).__name__}")
        features, boxes, mask = regions.features, regions.boxes, regions.mask.long()
        if features.shape[-1] != self.cfg.feature_dim:
            raise ValueError(f"region features have {features.shape[-1]} dims, the encoder expects {self.cfg.feature_dim}")
        dtype = self.img_linear.weight.dtype
        geometry = box_geometry(boxes.to(dtype))
        x = self.img_layer_norm(self.img_linear(features.to(dtype))) + self.pos_layer_norm(self.pos_linear(geometry))
        if self.cls_token is not None:
            whole = box_geometry(torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=dtype, device=x.device))
            img = self.cls_token + self.pos_layer_norm(self.pos_linear(whole))
            x = torch.cat([img.expand(x.shape[0], -1, -1), x], dim=1)
            mask = torch.cat([mask.new_ones(mask.shape[0], 1), mask], dim=1)
        x = self.drop(self.norm(x))
        if self.cfg.depth:
            x = self.blocks(x, attn_mask=padding_mask(mask))
        pooled = x[:, 0] if self.cfg.pool == "cls" else masked_mean(x[:, self.num_prefix_tokens :], mask[:, self.num_prefix_tokens :])
        return EncoderOutput(tokens=x, pooled=pooled, mask=mask)

    @property
    def num_prefix_tokens(self) -> int:
        return 1 if self.cls_token is not None else 0
