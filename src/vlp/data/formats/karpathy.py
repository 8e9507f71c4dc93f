"""Writers for the Karpathy-split JSON and COCO captions JSON (their readers are in
``vlp.data.readers``), so any format can be converted into the two retrieval-benchmark layouts."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from vlp.data.formats.common import ImageSample, ReencodeStats, written_images

__all__ = ["write_karpathy", "write_coco", "karpathy_tokens"]

_WORD = re.compile(r"[a-z0-9]+")


def karpathy_tokens(caption: str) -> list[str]:
    """Lower-cased alphanumeric words, the shape of Karpathy's ``tokens`` (``bear's`` -> ``bear``, ``s``)."""
    return _WORD.findall(caption.lower())


def write_karpathy(
    samples: Iterable[ImageSample],
    root: str | os.PathLike[str],
    *,
    json_name: str = "dataset_coco.json",
    dataset: str = "coco",
    image_format: str | None = None,
    stats: ReencodeStats | None = None,
) -> Path:
    """Write ``root/json_name`` and the images under ``root`` at their names (``filepath`` is
    the name's folder, ``filename`` its last part). ``imgid`` keeps the sample's image id."""
    base = Path(root)
    base.mkdir(parents=True, exist_ok=True)
    stats = stats if stats is not None else ReencodeStats()
    images = []
    sentence_id = 0
    for sample, name in written_images(samples, base, image_format, stats):
        pure = PurePosixPath(name)
        sentences = []
        for caption in sample.captions:
            sentences.append({"raw": caption, "tokens": karpathy_tokens(caption), "imgid": sample.image_id, "sentid": sentence_id})
            sentence_id += 1
        images.append({
            "filepath": str(pure.parent) if str(pure.parent) != "." else "",
            "filename": pure.name,
            "imgid": sample.image_id,
            "split": sample.split,
            "sentids": [s["sentid"] for s in sentences],
            "sentences": sentences,
        })
    out = base / json_name
    out.write_text(json.dumps({"dataset": dataset, "images": images}, ensure_ascii=False), encoding="utf-8")
    return out


def write_coco(
    samples: Iterable[ImageSample],
    root: str | os.PathLike[str],
    *,
    json_pattern: str = "captions_{split}.json",
    image_format: str | None = None,
    stats: ReencodeStats | None = None,
) -> list[Path]:
    """Write COCO captions files, one per split (COCO has no split field: ``captions_train2014.json``
    style), and the images under ``root``; ``file_name`` is relative to ``root``, so read back with
    ``read_coco_captions(root / "captions_test.json", root, split="test")``."""
    if "{split}" not in json_pattern:
        raise ValueError(f"json_pattern must contain '{{split}}' (one file per split), got {json_pattern!r}")
    base = Path(root)
    base.mkdir(parents=True, exist_ok=True)
    stats = stats if stats is not None else ReencodeStats()
    by_split: dict[str, dict[str, list]] = {}
    annotation_id = 0
    for sample, name in written_images(samples, base, image_format, stats):
        tables = by_split.setdefault(sample.split, {"images": [], "annotations": []})
        tables["images"].append({"id": sample.image_id, "file_name": name})
        for caption in sample.captions:
            tables["annotations"].append({"id": annotation_id, "image_id": sample.image_id, "caption": caption})
            annotation_id += 1
    written = []
    for split, tables in by_split.items():
        out = base / json_pattern.format(split=split)
        out.write_text(json.dumps(tables, ensure_ascii=False), encoding="utf-8")
        written.append(out)
    return written
