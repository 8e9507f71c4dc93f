"""Offline region feature extraction: RoIAlign over a CNN trunk, or a torchvision Faster R-CNN.

BUTD-style models never see pixels; these functions produce what they see. Two routes:

* `extract_region_features`: given boxes (ground-truth objects, e.g. the scenes dataset's
  COCO-format ``objects_{split}.json``, or one whole-image box), pool each box of a CNN feature
  map with `torchvision.ops.roi_align` and average the pooled grid: BUTD's recipe with the boxes
  supplied instead of detected.
* `extract_detector_regions`: a torchvision Faster R-CNN proposes and scores boxes; the features
  are its box head's outputs for the kept detections, as BUTD takes its detector's pooled C5
  features. Build the detector with `build_faster_rcnn` from a local weights file; an untrained
  detector runs too (tests do), it just finds nothing meaningful.

Both return `RegionInputs` with boxes normalised by the image size; store them with
`vlp.data.regions.write_region_features`. Call them under `torch.no_grad()` for offline use;
they stay differentiable so an end-to-end model can also use them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from vlp.encoders.image.region import RegionInputs

__all__ = ["build_faster_rcnn", "extract_detector_regions", "extract_region_features", "xywh_to_xyxy"]


def xywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """COCO ``bbox`` [x, y, w, h] (pixels) -> [x1, y1, x2, y2]."""
    return torch.cat([boxes[..., :2], boxes[..., :2] + boxes[..., 2:4]], dim=-1)


def _normalise(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    scale = torch.tensor([width, height, width, height], dtype=boxes.dtype, device=boxes.device)
    return (boxes / scale).clamp(0.0, 1.0)


def extract_region_features(
    images: torch.Tensor,
    boxes: Sequence[torch.Tensor] | None,
    backbone: nn.Module,
    output_size: int = 7,
    sampling_ratio: int = 2,
    spatial_scale: float | None = None,
) -> RegionInputs:
    """RoIAlign-pooled features of given boxes.

    images: [B, 3, H, W] (normalised as the backbone expects); boxes: per image a [K_i, 4] tensor
    of pixel x1, y1, x2, y2 (K_i may be 0), or None for one whole-image box each; backbone: any
    module mapping images to one feature map [B, C, h, w], e.g. `ResNetTrunk("resnet50", 3)` (the
    C4 trunk of BUTD's detector). Returns features [B, max K, C] (mean of the output_size^2 grid).
    spatial_scale defaults to feature-map width / image width; pass 1 / stride (`trunk.stride`)
    when the image size is not a multiple of the stride.
    """
    batch, _, height, width = images.shape
    if boxes is None:
        whole = torch.tensor([[0.0, 0.0, float(width), float(height)]], device=images.device)
        boxes = [whole for _ in range(batch)]
    if len(boxes) != batch:
        raise ValueError(f"{len(boxes)} box tensors for {batch} images")
    from torchvision.ops import roi_align

    fmap = backbone(images)
    if fmap.ndim != 4:
        raise ValueError(f"backbone must return one [B, C, h, w] feature map, got {tuple(fmap.shape)}")
    scale = spatial_scale if spatial_scale is not None else fmap.shape[-1] / width
    rois = [b.to(device=fmap.device, dtype=fmap.dtype).reshape(-1, 4) for b in boxes]
    pooled = roi_align(fmap, rois, output_size, spatial_scale=scale, sampling_ratio=sampling_ratio, aligned=True)
    features = pooled.mean(dim=(2, 3)).split([len(b) for b in rois])  # per image [K_i, C]
    normalised = [_normalise(b, height, width) for b in rois]
    return RegionInputs.pad(list(features), normalised)


def build_faster_rcnn(
    weights_path: str | None = None, min_size: int = 800, max_size: int = 1333, **kwargs: Any
) -> nn.Module:
    """torchvision's ``fasterrcnn_resnet50_fpn`` without any download, in eval mode.

    weights_path: a local state dict of the whole detector (safetensors or torch file); None keeps
    it untrained. Other keyword arguments go to torchvision (``box_score_thresh``,
    ``rpn_post_nms_top_n_test``, ``num_classes``, ...).
    """
    from torchvision.models.detection import fasterrcnn_resnet50_fpn

    model = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, min_size=min_size, max_size=max_size, **kwargs)
    if weights_path:
        from vlp.encoders.convert import load_state_dict_file

        model.load_state_dict(load_state_dict_file(weights_path))
    return model.eval()


def extract_detector_regions(
    images: Sequence[torch.Tensor] | torch.Tensor,
    detector: nn.Module,
    max_regions: int = 36,
    score_threshold: float = 0.2,
    boxes: Sequence[torch.Tensor] | None = None,
) -> RegionInputs:
    """Detect regions and take the detector's box-head features for them (BUTD: 36 boxes, 0.2 threshold).

    images: [3, H, W] tensors in [0, 1] (the detector normalises and resizes them itself); boxes:
    optional per-image pixel x1, y1, x2, y2 to use instead of detections. An image without any
    detection above the threshold gets zero regions (an all-zero mask row).
    """
    from torchvision.models.detection.transform import resize_boxes

    if detector.training:
        raise ValueError("the detector must be in eval mode (call .eval())")
    images = list(images)
    original_sizes = [tuple(int(s) for s in img.shape[-2:]) for img in images]
    image_list, _ = detector.transform(images)
    sizes = image_list.image_sizes
    features = detector.backbone(image_list.tensors)
    if boxes is None:
        proposals, _ = detector.rpn(image_list, features)
        detections, _ = detector.roi_heads(features, proposals, sizes)
        kept = []
        for det in detections:
            order = det["scores"].argsort(descending=True)
            order = order[det["scores"][order] >= score_threshold][:max_regions]
            kept.append(det["boxes"][order])
    else:
        if len(boxes) != len(images):
            raise ValueError(f"{len(boxes)} box tensors for {len(images)} images")
        kept = [resize_boxes(b.float().reshape(-1, 4), orig, size) for b, orig, size in zip(boxes, original_sizes, sizes)]
    pooled = detector.roi_heads.box_roi_pool(features, kept, sizes)  # [sum K, C, 7, 7]
    region_features = detector.roi_heads.box_head(pooled).split([len(b) for b in kept])  # [K_i, 1024]
    normalised = [
        _normalise(resize_boxes(b, size, orig), orig[0], orig[1]) for b, size, orig in zip(kept, sizes, original_sizes)
    ]
    return RegionInputs.pad(list(region_features), normalised)
