"""JSON Lines (and plain JSON lists) of ``{"image": ..., "caption": ...}`` objects.

Accepted per object: the image under ``image_key`` (default ``"image"``); captions under
``"caption"`` (a string or a list, as in ``photos/descriptions.json``), ``"captions"`` (a list) or
``"text"`` (LAION-style); optional ``"split"`` and ``"image_id"``. Lines naming the same image are
grouped into one record. A ``.json`` file holding one list of such objects is read the same way,
so the simple ``[{image, caption: [...]}]`` description files need no converter.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import Any

from vlp.data.formats.common import ImageSample, ReencodeStats, Row, group_rows, written_images
from vlp.data.readers import _abs, _load_json, _normalise_splits
from vlp.data.records import DataFormatError, ImageRecord, ReadStats

__all__ = ["read_jsonl", "write_jsonl", "CAPTION_KEYS"]

CAPTION_KEYS = ("caption", "captions", "text")


def read_jsonl(
    path: str | os.PathLike[str],
    image_root: str | os.PathLike[str] | None = None,
    *,
    image_key: str = "image",
    split: str = "train",
    splits: Collection[str] | None = None,
    stats: ReadStats | None = None,
) -> list[ImageRecord]:
    """Read a ``.jsonl`` file (or a ``.json`` list). A line's split is its ``"split"`` field, else ``split``."""
    file = Path(path)
    root = _abs(file.parent if image_root is None else Path(image_root))
    rows = [_row(obj, where, file, image_key, split) for where, obj in _objects(file)]
    return group_rows(rows, file, root, _normalise_splits(splits), stats)


def _objects(file: Path) -> Iterator[tuple[str, Any]]:
    if file.suffix.lower() == ".json":
        data = _load_json(file)
        if not isinstance(data, list):
            raise DataFormatError(f"{file}: expected a JSON list of objects, got {type(data).__name__}")
        for i, obj in enumerate(data):
            yield f"[{i}]", obj
        return
    try:
        with open(file, encoding="utf-8") as f:
            for n, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    yield f"line {n}", json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataFormatError(f"{file}: line {n}: invalid JSON: {e}") from e
    except UnicodeDecodeError as e:
        raise DataFormatError(f"{file}: not UTF-8 text: {e}") from e


def _row(obj: Any, where: str, file: Path, image_key: str, split: str) -> Row:
    if not isinstance(obj, dict):
        raise DataFormatError(f"{file}: {where}: expected an object, got {type(obj).__name__}")
    image = obj.get(image_key)
    if not isinstance(image, str) or not image.strip():
        raise DataFormatError(f"{file}: {where}.{image_key}: expected an image path, got {image!r} (keys: {sorted(obj)})")
    key = next((k for k in CAPTION_KEYS if k in obj), None)
    if key is None:
        raise DataFormatError(f"{file}: {where}: no caption: expected one of {list(CAPTION_KEYS)} (keys: {sorted(obj)})")
    value = obj[key]
    captions = [value] if isinstance(value, str) else value
    if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
        raise DataFormatError(f"{file}: {where}.{key}: expected a string or a list of strings, got {value!r:.60}")
    image_id = obj.get("image_id")
    if image_id is not None and (not isinstance(image_id, int) or isinstance(image_id, bool)):
        raise DataFormatError(f"{file}: {where}.image_id: expected an integer, got {image_id!r}")
    row_split = obj.get("split", split)
    if not isinstance(row_split, str):
        raise DataFormatError(f"{file}: {where}.split: expected a string, got {row_split!r}")
    return Row(where, image.strip(), tuple(captions), row_split, image_id)


def write_jsonl(
    samples: Iterable[ImageSample],
    path: str | os.PathLike[str],
    *,
    image_format: str | None = None,
    stats: ReencodeStats | None = None,
) -> int:
    """One line per image: ``{"image", "captions", "split", "image_id"}``; images next to the file.
    Returns the number of lines."""
    file = Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    stats = stats if stats is not None else ReencodeStats()
    lines = 0
    with open(file, "w", encoding="utf-8") as f:
        for sample, name in written_images(samples, file.parent, image_format, stats):
            obj = {"image": name, "captions": list(sample.captions), "split": sample.split, "image_id": sample.image_id}
            f.write(json.dumps(obj, ensure_ascii=False) + "\n")
            lines += 1
    return lines
