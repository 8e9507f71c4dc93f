"""Region-feature data for BUTD-style models (UNITER, OSCAR, VisualBERT, LXMERT, VLP): extract, read, collate.

* `extract_scene_regions`: offline features for the built-in scenes. The "detector" boxes are the
  ground-truth objects of ``objects_{split}.json`` (scenes ship them in COCO detection format); a
  ResNet trunk plus RoIAlign pools one vector per box, and one whole-image box is put first, like
  the global image feature BUTD-derived pipelines add in front of the detections (so an image
  without objects still has one region). Output: one ``vlp-regions-1`` file (`vlp.data.regions`).
* `object_tags`: OSCAR-style object tags per image ("red circle blue square") from the same JSON.
* `RegionCaptionPairDataset` / `RegionImageDataset`: like `CaptionPairDataset` / `ImageDataset`
  but items carry region features read lazily from a `RegionFeatureReader` instead of pixels.
* `RegionPairCollator` / `RegionImageCollator`: pad regions into `RegionInputs`, tokenise (with
  the tag segment for OSCAR), MLM-mask with the same `MLMMasker` as `PairCollator`.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from vlp.data.batch import Batch
from vlp.data.datasets import MLMMasker, _check_index, _StringTable
from vlp.data.images import CorruptImageError, ImageTransform, load_rgb
from vlp.data.records import DataWarning, ImageRecord
from vlp.data.regions import RegionFeatureReader, load_coco_boxes, write_region_features
from vlp.data.tokenizer import TextTokenizer
from vlp.encoders.image.region import RegionInputs

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "RegionCaptionPairDataset",
    "RegionImageBatch",
    "RegionImageCollator",
    "RegionImageDataset",
    "RegionPairCollator",
    "encode_with_tags",
    "extract_scene_regions",
    "object_tags",
]

PathLike = str | os.PathLike[str]
# torchvision's ResNet weights expect ImageNet normalisation (not CLIP's).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# -- extraction ---------------------------------------------------------------------------------


def _build_trunk(backbone: str, stages: int, seed: int, weights_path: str | None) -> torch.nn.Module:
    from vlp.encoders.image.cnn import ResNetTrunk

    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's global RNG
        torch.manual_seed(seed)
        trunk = ResNetTrunk(backbone, stages)  # type: ignore[arg-type]
    if weights_path is not None:
        from vlp.encoders.convert import load_state_dict_file

        trunk.load_torchvision_weights(load_state_dict_file(weights_path))
    return trunk.eval()


def _scene_entries(scenes_dir: Path, split: str) -> list[tuple[int, Path, int, torch.Tensor]]:
    """(image id, image path, side length, pixel xyxy object boxes [K, 4]) of one split, in file order."""
    path = scenes_dir / f"objects_{split}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {scenes_dir} a scenes dataset with split {split!r}?")
    images = json.loads(path.read_text(encoding="utf-8")).get("images", [])
    boxes = load_coco_boxes(path)
    entries = []
    for img in images:
        width, height = int(img["width"]), int(img["height"])
        if width != height:
            raise ValueError(f"{path}: image {img['id']} is {width}x{height}; scenes images are square")
        entries.append((int(img["id"]), scenes_dir / "images" / split / img["file_name"], width, boxes[int(img["id"])]))
    return entries


def extract_scene_regions(
    scenes_dir: PathLike,
    out_path: PathLike,
    splits: str | Sequence[str],
    *,
    backbone: str = "resnet18",
    stages: int = 3,
    image_size: int | None = None,
    batch_size: int = 64,
    max_regions: int | None = None,
    seed: int = 0,
    weights_path: str | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float16,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Region features of the scenes images of ``splits``, written to one ``vlp-regions-1`` file.

    Per image, region 0 is the whole image (normalised box 0, 0, 1, 1; BUTD-style global
    feature), followed by the objects of ``objects_{split}.json`` in file order. ``max_regions``
    caps the total, whole-image region included. Features are the ``output_size`` 7x7 RoIAlign
    grid of `ResNetTrunk(backbone, stages)` averaged (dim = ``trunk.out_channels``: 256 for
    resnet18 at 3 stages, 1024 for resnet50); boxes are stored normalised to [0, 1].

    Weights: no pretrained weights exist offline, so the trunk is randomly initialised from
    ``seed`` (features are then random projections of the pixels: enough to test pipelines and
    to learn the scenes' colours and shapes, not ImageNet features). Pass ``weights_path``, a
    local torchvision ResNet state dict (``.pth`` or ``.safetensors``), to use trained weights.
    Images are resized to ``image_size`` (default: their own size) and normalised with ImageNet
    statistics, as torchvision weights expect.

    Deterministic: the same arguments give the same file (on one machine and device). Corrupt or
    missing image files are skipped with one counted `DataWarning`.
    """
    scenes_dir = Path(scenes_dir)
    split_list = [splits] if isinstance(splits, str) else list(splits)
    if not split_list:
        raise ValueError("no splits given")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_regions is not None and max_regions < 1:
        raise ValueError(f"max_regions must be >= 1 (the whole-image region), got {max_regions}")
    say = progress or (lambda _line: None)
    entries = [e for split in split_list for e in _scene_entries(scenes_dir, split)]
    if not entries:
        raise ValueError(f"splits {split_list} of {scenes_dir} list no images")
    size = image_size if image_size is not None else entries[0][2]
    transform = ImageTransform(size, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    trunk = _build_trunk(backbone, stages, seed, weights_path).to(device)
    from vlp.encoders.image.region_extract import extract_region_features

    say(f"[regions] {len(entries)} images of {split_list} -> {out_path} ({backbone}, {stages} stages, {size}px)")
    began = time.perf_counter()
    items: list[tuple[int, torch.Tensor, torch.Tensor]] = []
    bad: list[str] = []
    whole = torch.tensor([[0.0, 0.0, float(size), float(size)]])
    reported = 0
    with torch.inference_mode():
        for start in range(0, len(entries), batch_size):
            pixels, rois, ids = [], [], []
            for image_id, path, side, boxes in entries[start : start + batch_size]:
                try:
                    pixels.append(transform(load_rgb(path)))
                except CorruptImageError as e:
                    bad.append(str(e))
                    continue
                roi = torch.cat([whole, boxes * (size / side)])
                rois.append(roi[:max_regions] if max_regions is not None else roi)
                ids.append(image_id)
            if not ids:
                continue
            out = extract_region_features(
                torch.stack(pixels).to(device), [r.to(device) for r in rois], trunk, spatial_scale=1.0 / trunk.stride
            )
            for i, (image_id, roi) in enumerate(zip(ids, rois)):
                n = len(roi)
                items.append((image_id, out.features[i, :n].float().cpu(), out.boxes[i, :n].float().cpu()))
            done = min(start + batch_size, len(entries))
            if 10 * done // len(entries) > reported and done < len(entries):
                reported = 10 * done // len(entries)
                say(f"[regions] {done}/{len(entries)} images, {time.perf_counter() - began:.1f}s")
    if bad:
        warnings.warn(
            f"{len(bad)} of {len(entries)} images could not be read and have no regions, e.g. {bad[0]}",
            DataWarning,
            stacklevel=2,
        )
    if not items:
        raise ValueError(f"no readable images in splits {split_list} of {scenes_dir}")
    if not all(torch.isfinite(f).all() for _, f, _ in items):
        raise FloatingPointError("non-finite region features: the trunk's activations overflowed")
    path = write_region_features(out_path, items, dtype=dtype)
    say(f"[regions] wrote {len(items)} images to {path} in {time.perf_counter() - began:.1f}s")
    return path


def object_tags(objects_json_path: PathLike, attributes: Sequence[str] = ("colour",)) -> dict[int, str]:
    """OSCAR-style object tags per image id, e.g. ``"red circle blue square"``.

    Each object contributes its ``attributes`` (keys of the annotation's ``attributes``, in this
    order) and then its shape (the ``shape`` attribute, else the category name); objects are
    ordered by box x, then y, then annotation id, so the text is deterministic. Images listed
    without objects get ``""``.
    """
    path = Path(objects_json_path)
    data = json.loads(path.read_text(encoding="utf-8"))
    categories = {int(c["id"]): str(c["name"]) for c in data.get("categories", [])}
    found: dict[int, list[tuple[float, float, int, str]]] = {int(img["id"]): [] for img in data.get("images", [])}
    for ann in data.get("annotations", []):
        attrs = ann.get("attributes") or {}
        shape = attrs.get("shape") or categories.get(int(ann.get("category_id", -1)))
        words = [str(attrs[a]) for a in attributes if attrs.get(a)] + ([str(shape)] if shape else [])
        x, y = float(ann["bbox"][0]), float(ann["bbox"][1])
        found.setdefault(int(ann["image_id"]), []).append((x, y, int(ann.get("id", 0)), " ".join(words)))
    return {image_id: " ".join(w for *_, w in sorted(objs) if w) for image_id, objs in found.items()}


# -- datasets -----------------------------------------------------------------------------------


def _present(records: Sequence[ImageRecord], regions: RegionFeatureReader) -> tuple[np.ndarray, int]:
    """Positions in ``records`` of the images that have features, and how many do not (warned once)."""
    keep = np.fromiter((i for i, r in enumerate(records) if r.image_id in regions), dtype=np.int64)
    missing = len(records) - len(keep)
    if missing:
        example = next(r.image_id for r in records if r.image_id not in regions)
        warnings.warn(
            f"{missing} of {len(records)} images have no region features in {[str(p) for p in regions.paths]} "
            f"(e.g. image id {example}); skipped",
            DataWarning,
            stacklevel=3,
        )
    return keep, missing


class RegionCaptionPairDataset(Dataset):
    """One item per (image, caption) pair of the images that have region features.

    Item: ``{"features": [R, F] (stored dtype), "boxes": [R, 4] float32, "text": str,
    "image_id": int}``, plus ``"tags": str`` when ``tags`` (image id -> tag text, see
    `object_tags`) is given (``""`` for an image it lacks). Images missing from ``regions`` are
    skipped with one `DataWarning` at construction; ``missing_images`` counts them.
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        regions: RegionFeatureReader,
        tags: Mapping[int, str] | None = None,
    ) -> None:
        keep, self.missing_images = _present(records, regions)
        self.regions = regions
        kept = [records[int(i)] for i in keep]
        self._image_ids = np.fromiter((r.image_id for r in kept), dtype=np.int64, count=len(kept))
        counts = np.fromiter((len(r.captions) for r in kept), dtype=np.int64, count=len(kept))
        self._pair_image = np.repeat(np.arange(len(kept), dtype=np.int64), counts)
        self._texts = _StringTable([c for r in kept for c in r.captions])
        self._tags = None if tags is None else _StringTable([tags.get(r.image_id, "") for r in kept])

    @property
    def num_images(self) -> int:
        return len(self._image_ids)

    def __len__(self) -> int:
        return len(self._texts)

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = _check_index(i, len(self))
        rec = int(self._pair_image[i])
        image_id = int(self._image_ids[rec])
        features, boxes = self.regions[image_id]
        item: dict[str, Any] = {"features": features, "boxes": boxes, "text": self._texts[i], "image_id": image_id}
        if self._tags is not None:
            item["tags"] = self._tags[rec]
        return item


class RegionImageDataset(Dataset):
    """One item per image that has region features, for evaluation galleries.

    Item: ``{"features": [R, F], "boxes": [R, 4], "image_id": int, "index": int}``; ``index`` is
    the position in ``records`` (as `captions_and_image_index` counts), so it stays right when
    images without features are skipped (one `DataWarning`, counted in ``missing_images``).
    """

    def __init__(self, records: Sequence[ImageRecord], regions: RegionFeatureReader) -> None:
        self._index, self.missing_images = _present(records, regions)
        self.regions = regions
        ids = (records[int(i)].image_id for i in self._index)
        self._image_ids = np.fromiter(ids, dtype=np.int64, count=len(self._index))

    def __len__(self) -> int:
        return len(self._image_ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = _check_index(i, len(self))
        image_id = int(self._image_ids[i])
        features, boxes = self.regions[image_id]
        return {"features": features, "boxes": boxes, "image_id": image_id, "index": int(self._index[i])}


# -- collation ----------------------------------------------------------------------------------


def encode_with_tags(
    tokenizer: TextTokenizer, captions: Sequence[str], tags: Sequence[str], max_length: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask, token_type_ids)`` [B, L] for ``[CLS] caption [SEP] tags [SEP]``.

    OSCAR's text side: segment 0 is ``[CLS] caption [SEP]``, segment 1 ``tags [SEP]``. Rows longer
    than ``max_length`` lose tag tokens first, then caption tokens. A row whose tag segment ends
    up empty (no tags, or no room) is ``[CLS] caption [SEP]``, exactly what
    ``tokenizer.encode_batch`` gives. Padded with ``pad_id`` (type 0) to the longest row.
    """
    if len(captions) != len(tags):
        raise ValueError(f"{len(captions)} captions but {len(tags)} tag strings")
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2 to hold [CLS] and [SEP], got {max_length}")
    backend = tokenizer.backend  # no truncation or padding configured
    encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
    cap_ids = [e.ids for e in encode(list(captions), add_special_tokens=False)]
    tag_ids = [e.ids for e in encode(list(tags), add_special_tokens=False)]
    cls, sep = tokenizer.cls_id, tokenizer.sep_id
    rows: list[list[int]] = []
    types: list[list[int]] = []
    for cap, tag in zip(cap_ids, tag_ids):
        n_tags = min(len(tag), max(0, max_length - 3 - len(cap)))
        if n_tags == 0:
            rows.append([cls, *cap[: max_length - 2], sep])
            types.append([0] * len(rows[-1]))
        else:
            rows.append([cls, *cap, sep, *tag[:n_tags], sep])
            types.append([0] * (len(cap) + 2) + [1] * (n_tags + 1))
    length = max((len(r) for r in rows), default=0)
    ids = torch.full((len(rows), length), tokenizer.pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    token_types = torch.zeros((len(rows), length), dtype=torch.long)
    for i, (row, row_types) in enumerate(zip(rows, types)):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
        token_types[i, : len(row)] = torch.tensor(row_types, dtype=torch.long)
    return ids, mask, token_types


def _empty_regions() -> RegionInputs:
    return RegionInputs(torch.zeros((0, 0, 0)), torch.zeros((0, 0, 4)), torch.zeros((0, 0), dtype=torch.long))


def _pad_regions(items: Iterable[dict[str, Any]], max_regions: int | None, dtype: torch.dtype) -> RegionInputs:
    items = list(items)
    return RegionInputs.pad(
        [it["features"].to(dtype) for it in items],
        [it["boxes"].to(torch.float32) for it in items],
        max_regions=max_regions,
    )


class RegionPairCollator:
    """``collate_fn`` for `RegionCaptionPairDataset` -> `Batch` with ``regions`` set.

    ``pixels`` is an empty ``[B, 0]`` tensor (read the image side through ``batch.image_input``).
    Regions are padded to the batch's longest (or cut to ``max_regions``, keeping the first: the
    whole-image region and then the objects in extraction order) and cast to ``feature_dtype``.
    ``use_tags`` builds OSCAR's ``[CLS] caption [SEP] tags [SEP]`` with ``token_type_ids`` 0/1
    (`encode_with_tags`; items need ``"tags"``). ``mlm_rate > 0`` fills the MLM fields with the same
    `MLMMasker` as `PairCollator`; tag tokens can be masked too, as in OSCAR. ``None`` items are
    counted in ``skipped``. Picklable, for DataLoader workers.
    """

    def __init__(
        self,
        tokenizer: TextTokenizer,
        max_length: int,
        max_regions: int | None = None,
        mlm_rate: float = 0.0,
        whole_word: bool = False,
        seed: int = 0,
        use_tags: bool = False,
        feature_dtype: torch.dtype = torch.float32,
    ) -> None:
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2 to hold [CLS] and [SEP], got {max_length}")
        if mlm_rate < 0:
            raise ValueError(f"mlm_rate must be >= 0, got {mlm_rate}")
        if max_regions is not None and max_regions < 1:
            raise ValueError(f"max_regions must be >= 1, got {max_regions}")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.max_regions = max_regions
        self.use_tags = use_tags
        self.feature_dtype = feature_dtype
        self.masker = MLMMasker(tokenizer, mlm_rate, whole_word, seed) if mlm_rate > 0 else None

    def __call__(self, items: list[dict[str, Any] | None]) -> Batch:
        kept = [it for it in items if it is not None]
        skipped = len(items) - len(kept)
        mlm: dict[str, torch.Tensor] = {}
        if not kept:
            empty = torch.zeros((0, 0), dtype=torch.long)
            return Batch(
                pixels=torch.zeros((0, 0)),
                input_ids=empty,
                attention_mask=empty.clone(),
                image_ids=torch.zeros((0,), dtype=torch.long),
                skipped=skipped,
                regions=_empty_regions(),
                token_type_ids=empty.clone() if self.use_tags else None,
                **(self.masker.empty_fields() if self.masker is not None else {}),
            )
        texts = [it["text"] for it in kept]
        token_type_ids = None
        if self.use_tags:
            if any("tags" not in it for it in kept):
                raise KeyError("use_tags=True but items lack 'tags': pass tags= to RegionCaptionPairDataset")
            input_ids, attention_mask, token_type_ids = encode_with_tags(
                self.tokenizer, texts, [it["tags"] for it in kept], self.max_length
            )
        else:
            input_ids, attention_mask = self.tokenizer.encode_batch(texts, self.max_length)
        image_ids = torch.tensor([it["image_id"] for it in kept], dtype=torch.long)
        if self.masker is not None:
            mlm = self.masker.fields(input_ids, attention_mask, image_ids)
        return Batch(
            pixels=torch.zeros((len(kept), 0)),
            input_ids=input_ids,
            attention_mask=attention_mask,
            image_ids=image_ids,
            skipped=skipped,
            regions=_pad_regions(kept, self.max_regions, self.feature_dtype),
            token_type_ids=token_type_ids,
            **mlm,
        )


class RegionImageBatch(NamedTuple):
    regions: RegionInputs  # features [B, R, F]; [0, 0, 0] when every item was None
    image_ids: torch.Tensor  # [B] long
    skipped: int


class RegionImageCollator:
    """``collate_fn`` for `RegionImageDataset` -> ``RegionImageBatch(regions, image_ids, skipped)``."""

    def __init__(self, max_regions: int | None = None, feature_dtype: torch.dtype = torch.float32) -> None:
        self.max_regions = max_regions
        self.feature_dtype = feature_dtype

    def __call__(self, items: list[dict[str, Any] | None]) -> RegionImageBatch:
        kept = [it for it in items if it is not None]
        skipped = len(items) - len(kept)
        if not kept:
            return RegionImageBatch(_empty_regions(), torch.zeros((0,), dtype=torch.long), skipped)
        return RegionImageBatch(
            _pad_regions(kept, self.max_regions, self.feature_dtype),
            torch.tensor([it["image_id"] for it in kept], dtype=torch.long),
            skipped,
        )
