"""Region feature files ("vlp-regions-1"): precomputed detector features, one safetensors file per shard.

BUTD-style models (UNITER, OSCAR, VinVL, LXMERT) train on region features extracted once offline
(`vlp.encoders.image.region_extract`). Their original releases used TSV files of base64 strings
or LMDB; we store them as safetensors, which is memory-mappable, safe to load (no pickle), and
readable from any language.

Format of one shard (all tensors contiguous, images concatenated in one order):

    features   [total_R, F]     float16 or float32   region vectors of all images, back to back
    boxes      [total_R, 4]     float32              x1, y1, x2, y2 of each region
    offsets    [num_images + 1] int64                regions of image i are rows offsets[i]:offsets[i + 1]
    image_ids  [num_images]     int64                the dataset's image id of image i
    image_sizes [num_images, 2] int64   (optional)   width, height of image i in pixels; 0, 0 where
                                                     unknown. Kept so pixel and normalised boxes
                                                     convert into each other and into BUTD TSV
                                                     (whose rows carry image_w / image_h).

    metadata (safetensors' string -> string header):
      "format": "vlp-regions-1"
      "feature_dim": F as decimal text
      "normalised_boxes": "true" when boxes are divided by the image width / height (in [0, 1]),
                          "false" for pixel coordinates

Images with zero regions are allowed (two equal offsets). A dataset may span several shards; an
image id must appear in only one. `RegionFeatureReader` indexes the ids of all shards once
(O(1) lookup per image) and reads each image's rows lazily through `safe_open`, so opening a
reader costs the size of the index, not of the features; open file handles are not pickled, so
a reader can be handed to DataLoader workers.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from vlp.encoders.image.region import RegionInputs

__all__ = ["FORMAT", "RegionFeatureReader", "load_coco_boxes", "write_region_features"]

FORMAT = "vlp-regions-1"
PathLike = str | os.PathLike[str]


def write_region_features(
    path: PathLike,
    items: Iterable[tuple[int, torch.Tensor, torch.Tensor]],
    *,
    dtype: torch.dtype = torch.float16,
    normalised_boxes: bool = True,
    image_sizes: Mapping[int, tuple[int, int]] | None = None,
) -> Path:
    """Write one shard from ``(image_id, features [R, F], boxes [R, 4])`` items; returns the path.

    float16 halves the disk size of 2048-d detector features at no measurable cost to the models
    that consume them; pass ``dtype=torch.float32`` to keep full precision. ``image_sizes`` (image
    id -> (width, height)) is stored when given; images missing from it get (0, 0). An image with
    zero regions may have features of any width (``[0, 0]`` from a TSV row with no boxes).
    """
    from safetensors.torch import save_file

    if dtype not in (torch.float16, torch.float32, torch.bfloat16):
        raise ValueError(f"feature dtype must be a float type, got {dtype}")
    ids: list[int] = []
    feats: list[torch.Tensor] = []
    boxes: list[torch.Tensor] = []
    offsets = [0]
    feature_dim: int | None = None
    for image_id, f, b in items:
        if f.ndim != 2 or b.ndim != 2 or b.shape[1] != 4 or len(f) != len(b):
            raise ValueError(f"image {image_id}: features {tuple(f.shape)} and boxes {tuple(b.shape)} must be [R, F] and [R, 4]")
        if len(f) == 0:
            pass  # no regions: its width says nothing
        elif feature_dim is None:
            feature_dim = int(f.shape[1])
        elif f.shape[1] != feature_dim:
            raise ValueError(f"image {image_id}: feature dim {f.shape[1]} differs from the shard's {feature_dim}")
        if normalised_boxes and len(b) and (b.min() < 0 or b.max() > 1):
            raise ValueError(f"image {image_id}: boxes are not normalised to [0, 1]; pass normalised_boxes=False")
        ids.append(int(image_id))
        feats.append(f.detach().to("cpu", dtype))
        boxes.append(b.detach().to("cpu", torch.float32))
        offsets.append(offsets[-1] + len(f))
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate image ids in one shard")
    if not ids:
        raise ValueError("no images to write")
    if feature_dim is None:
        raise ValueError("every image has zero regions: the feature dim is unknown")
    feats = [f.reshape(0, feature_dim) if len(f) == 0 else f for f in feats]
    tensors = {
        "features": torch.cat(feats).contiguous(),
        "boxes": torch.cat(boxes).contiguous(),
        "offsets": torch.tensor(offsets, dtype=torch.int64),
        "image_ids": torch.tensor(ids, dtype=torch.int64),
    }
    if image_sizes is not None:
        sizes = [tuple(image_sizes.get(i, (0, 0))) for i in ids]
        if any(len(s) != 2 or min(s) < 0 for s in sizes):
            raise ValueError("image_sizes must map image ids to (width, height) pairs of non-negative ints")
        tensors["image_sizes"] = torch.tensor(sizes, dtype=torch.int64).reshape(len(ids), 2)
    metadata = {"format": FORMAT, "feature_dim": str(feature_dim), "normalised_boxes": str(normalised_boxes).lower()}
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, out)  # atomic: a reader never sees half a shard
    return out


class RegionFeatureReader:
    """Per-image region features from one or more shards, looked up by image id."""

    def __init__(self, paths: PathLike | Sequence[PathLike]) -> None:
        from safetensors import safe_open

        self.paths = [Path(paths)] if isinstance(paths, (str, os.PathLike)) else [Path(p) for p in paths]
        if not self.paths:
            raise ValueError("no region feature shards given")
        self._index: dict[int, tuple[int, int, int]] = {}  # image id -> (shard, start, stop)
        self._sizes: dict[int, tuple[int, int]] = {}  # image id -> (width, height), where stored
        self.feature_dim: int | None = None
        self.normalised_boxes: bool | None = None
        for shard, path in enumerate(self.paths):
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                if meta.get("format") != FORMAT:
                    raise ValueError(f"{path}: not a {FORMAT} file (format {meta.get('format')!r})")
                dim, normalised = int(meta["feature_dim"]), meta.get("normalised_boxes") == "true"
                if self.feature_dim not in (None, dim) or self.normalised_boxes not in (None, normalised):
                    raise ValueError(f"{path}: feature_dim / normalised_boxes differ from the first shard's")
                self.feature_dim, self.normalised_boxes = dim, normalised
                offsets, ids = f.get_tensor("offsets").tolist(), f.get_tensor("image_ids").tolist()
                total = f.get_slice("features").get_shape()[0]
                sizes = f.get_tensor("image_sizes").tolist() if "image_sizes" in f.keys() else None
            if sizes is not None and (len(sizes) != len(ids) or any(len(s) != 2 for s in sizes)):
                raise ValueError(f"{path}: image_sizes must be [{len(ids)}, 2]")
            if len(offsets) != len(ids) + 1 or offsets[0] != 0 or offsets[-1] != total or any(
                a > b for a, b in zip(offsets, offsets[1:])
            ):
                raise ValueError(f"{path}: offsets do not partition the {total} feature rows")
            for i, image_id in enumerate(ids):
                if image_id in self._index:
                    raise ValueError(f"{path}: image id {image_id} is also in {self.paths[self._index[image_id][0]]}")
                self._index[image_id] = (shard, offsets[i], offsets[i + 1])
                if sizes is not None and sizes[i][0] > 0 and sizes[i][1] > 0:
                    self._sizes[image_id] = (int(sizes[i][0]), int(sizes[i][1]))
        self._handles: dict[int, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handles"] = {}  # safetensors handles do not pickle; each worker reopens lazily
        return state

    def _handle(self, shard: int) -> Any:
        if shard not in self._handles:
            from safetensors import safe_open

            self._handles[shard] = safe_open(str(self.paths[shard]), framework="pt")
        return self._handles[shard]

    @property
    def image_ids(self) -> list[int]:
        return list(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def image_size(self, image_id: int) -> tuple[int, int] | None:
        """(width, height) of an image where the shard stores it (``image_sizes``), else None."""
        return self._sizes.get(int(image_id))

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._index

    def __getitem__(self, image_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(features [R, F] in the stored dtype, boxes [R, 4] float32) of one image."""
        try:
            shard, start, stop = self._index[int(image_id)]
        except KeyError:
            raise KeyError(f"image id {image_id} has no region features in {len(self.paths)} shard(s)") from None
        handle = self._handle(shard)
        return handle.get_slice("features")[start:stop], handle.get_slice("boxes")[start:stop]

    def batch(
        self, image_ids: Sequence[int], max_regions: int | None = None, dtype: torch.dtype = torch.float32
    ) -> RegionInputs:
        """Padded `RegionInputs` of several images (what a collator puts into `batch.regions`)."""
        pairs = [self[i] for i in image_ids]
        return RegionInputs.pad([f.to(dtype) for f, _ in pairs], [b for _, b in pairs], max_regions=max_regions)


def load_coco_boxes(path: PathLike) -> dict[int, torch.Tensor]:
    """Boxes per image id from a COCO detection JSON (e.g. scenes' ``objects_{split}.json``).

    COCO ``bbox`` is [x, y, w, h] in pixels; the result is [K, 4] pixel x1, y1, x2, y2 per image,
    what `extract_region_features` takes. Images listed without annotations get [0, 4].
    """
    import json

    data = json.loads(Path(path).read_text(encoding="utf-8"))
    found: dict[int, list[list[float]]] = {int(img["id"]): [] for img in data.get("images", [])}
    for ann in data.get("annotations", []):
        x, y, w, h = (float(v) for v in ann["bbox"])
        found.setdefault(int(ann["image_id"]), []).append([x, y, x + w, y + h])
    return {i: torch.tensor(b, dtype=torch.float32).reshape(-1, 4) for i, b in found.items()}
