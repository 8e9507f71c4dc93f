"""A folder of per-image ``.npz`` region files (py-bottom-up-attention / VisualBERT extraction layout).

One file per image, named by the image (``42.npz`` or ``COCO_val2014_000000000042.npz``: the
trailing number is the id). Keys: features ``x`` (or ``features``) [R, F], boxes ``bbox`` (or
``boxes``) [R, 4] in pixels, optional ``image_w``, ``image_h``, ``num_bbox``. Files are opened
with ``allow_pickle=False``: an object array (which would need unpickling) makes that file a
malformed row, never code execution.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from vlp.data.formats.region_files import RegionItem, RowSource, check_arrays, image_id_of, pixel_item
from vlp.data.records import DataFormatError

__all__ = ["npz_rows", "write_npz_dir"]

_FEATURE_KEYS = ("x", "features")
_BOX_KEYS = ("bbox", "boxes")


def npz_rows(path: str | os.PathLike[str]) -> RowSource:
    folder = Path(path)
    if not folder.is_dir():
        raise DataFormatError(f"{folder}: the npz region format is a folder of <image_id>.npz files")
    files = sorted(folder.glob("*.npz"), key=_order)
    if not files:
        raise DataFormatError(f"{folder}: no .npz files")
    for file in files:
        yield str(file), lambda file=file: _load(file)


def _order(file: Path) -> tuple[int, int, str]:
    """By image id (so ``9.npz`` comes before ``10.npz``), unparseable names last."""
    try:
        return (0, image_id_of(file.stem), file.name)
    except DataFormatError:
        return (1, 0, file.name)


def _pick(data: np.lib.npyio.NpzFile, keys: tuple[str, ...], file: Path) -> np.ndarray:
    for key in keys:
        if key in data.files:
            return data[key]
    raise DataFormatError(f"{file}: none of the keys {list(keys)} (has {sorted(data.files)})")


def _scalar(data: np.lib.npyio.NpzFile, key: str, file: Path) -> int | None:
    if key not in data.files:
        return None
    value = data[key]
    if value.size != 1 or not np.issubdtype(value.dtype, np.number):
        raise DataFormatError(f"{file}: {key}: expected one number, got shape {list(value.shape)} {value.dtype}")
    number = value.reshape(()).item()
    if float(number) != int(number) or int(number) < 0:
        raise DataFormatError(f"{file}: {key}: expected a non-negative integer, got {number}")
    return int(number)


def _load(file: Path) -> RegionItem:
    try:
        image_id = image_id_of(file.stem)
    except DataFormatError as e:
        raise DataFormatError(f"{file}: {e}") from None
    try:
        with open(file, "rb") as handle, np.load(handle, allow_pickle=False) as data:  # our handle: closed on a bad zip too
            features, boxes = _pick(data, _FEATURE_KEYS, file), _pick(data, _BOX_KEYS, file)
            num, w, h = (_scalar(data, k, file) for k in ("num_bbox", "image_w", "image_h"))
    except DataFormatError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:  # object arrays, truncated or non-zip files
        raise DataFormatError(f"{file}: not a readable npz without pickles: {e}") from None
    for name, array in (("features", features), ("boxes", boxes)):
        if not np.issubdtype(array.dtype, np.floating):
            raise DataFormatError(f"{file}: {name}: expected floats, got {array.dtype}")
    check_arrays(features, boxes, num, str(file), "num_bbox")
    size = (w, h) if w and h else None
    return RegionItem(image_id, features.astype(np.float32), boxes.astype(np.float32), size, normalised_boxes=False)


def write_npz_dir(items: Iterable[RegionItem], dst: str | os.PathLike[str]) -> Path:
    """``<image_id>.npz`` per image with ``x``, ``bbox``, ``num_bbox`` and, where known, ``image_w``
    / ``image_h``; uncompressed (detector features barely compress and loading stays a memcpy)."""
    folder = Path(dst)
    folder.mkdir(parents=True, exist_ok=True)
    for item in items:
        item = pixel_item(item, "npz")
        arrays: dict[str, np.ndarray] = {
            "x": np.ascontiguousarray(item.features, dtype=np.float32),
            "bbox": np.ascontiguousarray(item.boxes, dtype=np.float32),
            "num_bbox": np.asarray(len(item.boxes), dtype=np.int64),
        }
        if item.image_size is not None:
            arrays["image_w"] = np.asarray(item.image_size[0], dtype=np.int64)
            arrays["image_h"] = np.asarray(item.image_size[1], dtype=np.int64)
        tmp = folder / f"{item.image_id}.npz.tmp"
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
            np.savez(f, **arrays)
        os.replace(tmp, folder / f"{item.image_id}.npz")
    return folder
