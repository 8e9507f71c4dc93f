"""Readers for caption annotation files -> ``list[ImageRecord]``.

Every reader validates the structure it needs and raises ``DataFormatError`` naming the file, the
entry index and the field. Data that is merely unusable (missing image files, empty captions) is
skipped with one summarising ``DataWarning`` per kind and counted in an optional ``ReadStats``,
never silently and never with a crash.
"""

from __future__ import annotations

import json
import os
import unicodedata
import warnings
from collections.abc import Collection
from pathlib import Path
from typing import Any

from vlp.data.records import DataFormatError, DataWarning, ImageRecord, ReadStats

__all__ = [
    "read_karpathy",
    "read_coco_captions",
    "normalise_caption",
    "finish_records",
    "ReadStats",
    "DataFormatError",
    "DataWarning",
]

# Karpathy's "restval" split is the part of COCO val2014 that everyone trains on.
_SPLIT_ALIASES = {"restval": "train"}


def read_karpathy(
    json_path: str | os.PathLike[str],
    image_root: str | os.PathLike[str] | None = None,
    splits: Collection[str] | None = None,
    *,
    stats: ReadStats | None = None,
) -> list[ImageRecord]:
    """Read a Karpathy-split file (``dataset_coco.json``, ``dataset_flickr30k.json``, ...).

    ``image_root`` defaults to the JSON file's directory; an image's path is
    ``image_root / filepath / filename`` (``filepath`` is optional: the Flickr files have none).
    ``image_id`` is the entry's ``imgid``; ``restval`` is mapped to ``train`` before ``splits``
    (a collection of split names, or one name) filters the entries.
    """
    path = Path(json_path)
    root = _abs(path.parent if image_root is None else Path(image_root))
    wanted = _normalise_splits(splits)
    data = _load_json(path)
    images = _get(data, "images", list, path, "top level")

    candidates: list[tuple[int, Path, str, list[Any]]] = []
    seen: dict[int, int] = {}
    for i, entry in enumerate(images):
        where = f"images[{i}]"
        if not isinstance(entry, dict):
            raise DataFormatError(f"{path}: {where}: expected an object, got {type(entry).__name__}")
        filename = _get(entry, "filename", str, path, where)
        filepath = _get(entry, "filepath", str, path, where, default="")
        image_id = _get(entry, "imgid", int, path, where)
        split = _get(entry, "split", str, path, where)
        sentences = _get(entry, "sentences", list, path, where)
        _check_unique(seen, image_id, i, path, "images", "imgid")
        raws = []
        for j, sentence in enumerate(sentences):
            swhere = f"{where}.sentences[{j}]"
            if not isinstance(sentence, dict):
                raise DataFormatError(
                    f"{path}: {swhere}: expected an object, got {type(sentence).__name__}"
                )
            raws.append(_get(sentence, "raw", str, path, swhere))
        split = _SPLIT_ALIASES.get(split, split)
        if wanted is not None and split not in wanted:
            continue
        candidates.append((image_id, root / filepath / filename, split, raws))
    return finish_records(candidates, path, root, stats)


def read_coco_captions(
    json_path: str | os.PathLike[str],
    image_dir: str | os.PathLike[str],
    split: str = "train",
    *,
    stats: ReadStats | None = None,
) -> list[ImageRecord]:
    """Read a COCO captions file (``captions_train2014.json`` style: ``images`` + ``annotations``).

    ``image_id`` is the COCO image id; every record gets ``split``. Images keep the file's order,
    captions the order of their annotations.
    """
    path = Path(json_path)
    root = _abs(Path(image_dir))
    data = _load_json(path)
    images = _get(data, "images", list, path, "top level")
    annotations = _get(data, "annotations", list, path, "top level")

    order: list[tuple[int, str]] = []
    captions: dict[int, list[Any]] = {}
    seen: dict[int, int] = {}
    for i, entry in enumerate(images):
        where = f"images[{i}]"
        if not isinstance(entry, dict):
            raise DataFormatError(f"{path}: {where}: expected an object, got {type(entry).__name__}")
        image_id = _get(entry, "id", int, path, where)
        file_name = _get(entry, "file_name", str, path, where)
        _check_unique(seen, image_id, i, path, "images", "id")
        order.append((image_id, file_name))
        captions[image_id] = []
    for k, ann in enumerate(annotations):
        where = f"annotations[{k}]"
        if not isinstance(ann, dict):
            raise DataFormatError(f"{path}: {where}: expected an object, got {type(ann).__name__}")
        image_id = _get(ann, "image_id", int, path, where)
        caption = _get(ann, "caption", str, path, where)
        if image_id not in captions:
            raise DataFormatError(
                f"{path}: {where}.image_id: {image_id} is not the id of any entry in 'images'"
            )
        captions[image_id].append(caption)
    candidates = [(iid, root / name, split, captions[iid]) for iid, name in order]
    return finish_records(candidates, path, root, stats)


# ---------------------------------------------------------------------------------------------
# helpers


def normalise_caption(text: str) -> str:
    """NFC-normalised, whitespace runs (tabs, newlines, double spaces) collapsed to one space, stripped.

    NFC makes the same visible caption the same string whichever way it was typed (a precomposed
    "é" versus "e" + combining accent), so tokenizers and duplicate checks agree across formats.
    """
    return " ".join(unicodedata.normalize("NFC", text).split())


def finish_records(
    candidates: list[tuple[int, Path, str, list[str]]],
    json_path: Path,
    root: Path,
    stats: ReadStats | None,
    urls: int = 0,
) -> list[ImageRecord]:
    """Drop missing images and empty captions, warn once per kind, fill ``stats``.

    Shared by every reader (``vlp.data.formats`` too): ``candidates`` are (image id, absolute
    image path, split, raw captions); captions are normalised with ``normalise_caption``.
    ``urls`` counts entries the caller already left out because their image is a URL.
    """
    records: list[ImageRecord] = []
    missing = empty = captionless = n_captions = 0
    for image_id, image_path, split, raws in candidates:
        if not image_path.is_file():
            missing += 1
            continue
        kept = tuple(c for c in (normalise_caption(r) for r in raws) if c)
        empty += len(raws) - len(kept)
        if not kept:
            captionless += 1
            continue
        n_captions += len(kept)
        records.append(ImageRecord(image_id, image_path, split, kept))

    if missing:
        warnings.warn(
            f"{missing} of {len(candidates)} images listed in {json_path} are missing under "
            f"{root}; skipped",
            DataWarning,
            stacklevel=3,
        )
    if urls:
        warnings.warn(
            f"{urls} image(s) in {json_path} are URLs, which vlp does not download (no network at "
            "training time); skipped. Download them first (e.g. with img2dataset) and point the "
            "file at the local copies",
            DataWarning,
            stacklevel=3,
        )
    if empty or captionless:
        warnings.warn(
            f"{empty} empty caption(s) in {json_path} dropped; {captionless} image(s) left "
            "without captions skipped",
            DataWarning,
            stacklevel=3,
        )
    if stats is not None:
        stats.images = len(records)
        stats.captions = n_captions
        stats.missing_images = missing
        stats.empty_captions = empty
        stats.images_without_captions = captionless
        stats.url_images = urls
    return records


_MISSING = object()


def _get(obj: Any, key: str, kind: type, path: Path, where: str, default: Any = _MISSING) -> Any:
    if not isinstance(obj, dict):
        raise DataFormatError(f"{path}: {where}: expected an object, got {type(obj).__name__}")
    if key not in obj:
        if default is not _MISSING:
            return default
        raise DataFormatError(f"{path}: {where}: missing key {key!r}")
    value = obj[key]
    # bool is an int subclass; an id of True is a format error, not image 1.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        field_name = key if where == "top level" else f"{where}.{key}"
        raise DataFormatError(
            f"{path}: {field_name}: expected {kind.__name__}, got {type(value).__name__} "
            f"({_short(value)})"
        )
    return value


def _check_unique(seen: dict[int, int], image_id: int, i: int, path: Path, table: str, key: str):
    first = seen.setdefault(image_id, i)
    if first != i:
        raise DataFormatError(
            f"{path}: {table}[{i}].{key}: duplicate id {image_id} (also {table}[{first}].{key}); "
            "ids must be unique because losses and recall treat equal ids as the same image"
        )


def _load_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataFormatError(f"{path}: invalid JSON: {e}") from e
    except UnicodeDecodeError as e:
        raise DataFormatError(f"{path}: not UTF-8 text: {e}") from e


def _normalise_splits(splits: Collection[str] | None) -> frozenset[str] | None:
    if splits is None:
        return None
    if isinstance(splits, str):  # read_karpathy(p, splits="train") means one split, not 5 letters
        splits = (splits,)
    return frozenset(_SPLIT_ALIASES.get(s, s) for s in splits)


def _abs(p: Path) -> Path:
    return Path(os.path.abspath(os.path.expanduser(p)))


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
