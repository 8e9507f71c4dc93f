"""The bottom-up-attention TSV: one image per row, arrays as base64 of little-endian float32.

Columns (peteanderson80/bottom-up-attention's ``generate_tsv.py``, no header):
``image_id, image_w, image_h, num_boxes, boxes, features``; ``boxes`` holds num_boxes x 4 pixel
x1, y1, x2, y2 and ``features`` num_boxes x F. Releases built on it reorder or add columns
(LXMERT: ``img_id, img_h, img_w, objects_id, objects_conf, attrs_id, attrs_conf, num_boxes, boxes,
features``): give the order as ``fields``, or put it in a header line (``img_*`` names are
accepted for ``image_*``); columns vlp does not use are ignored. Rows are megabytes long, past the
``csv`` module's default 128 kB field limit, which is raised while reading. Base64 written by
Python 3 ports as ``b'...'`` (``str()`` of bytes, a common bug in converted scripts) is accepted.
"""

from __future__ import annotations

import base64
import binascii
import csv
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from vlp.data.formats.region_files import RegionItem, RowSource, check_arrays, image_id_of, pixel_item
from vlp.data.records import DataFormatError

__all__ = ["BUTD_FIELDS", "tsv_rows", "write_butd_tsv"]

BUTD_FIELDS = ("image_id", "image_w", "image_h", "num_boxes", "boxes", "features")
_ALIASES = {"img_id": "image_id", "img_w": "image_w", "img_h": "image_h"}
_REQUIRED = ("image_id", "num_boxes", "boxes", "features")


def _names(fields: Sequence[str], where: str) -> list[str]:
    names = [_ALIASES.get(f.strip().lower(), f.strip().lower()) for f in fields]
    missing = [n for n in _REQUIRED if n not in names]
    if missing:
        raise DataFormatError(f"{where}: the columns {names} lack {missing}")
    return names


def _field_limit() -> int:
    limit = sys.maxsize
    while True:  # the C long behind the limit is 32-bit on some platforms
        try:
            csv.field_size_limit(limit)
            return limit
        except OverflowError:
            limit //= 2


def tsv_rows(path: str | os.PathLike[str], fields: Sequence[str] | None = None) -> RowSource:
    """(where, parse) per data row; a header line is recognised by its first cell (image_id / img_id)."""
    file = Path(path)
    if not file.is_file():
        raise DataFormatError(f"{file}: no such TSV file")
    previous = csv.field_size_limit()
    _field_limit()
    try:
        with open(file, newline="", encoding="utf-8", errors="replace") as f:
            names = _names(fields or BUTD_FIELDS, f"{file}: fields")
            for n, cells in enumerate(csv.reader(f, delimiter="\t"), start=1):
                if n == 1 and cells and _ALIASES.get(cells[0].strip().lower(), cells[0].strip().lower()) == "image_id":
                    names = _names(cells, f"{file}: header")
                    continue
                if not cells:
                    continue
                yield f"{file}: row {n}", lambda cells=cells, n=n: _parse(cells, names, f"{file}: row {n}")
    finally:
        csv.field_size_limit(previous)


def _int(text: str, name: str, where: str) -> int:
    try:
        value = float(text)
    except ValueError:
        raise DataFormatError(f"{where}: {name}: expected a number, got {text[:40]!r}") from None
    if not value.is_integer() or value < 0:
        raise DataFormatError(f"{where}: {name}: expected a non-negative integer, got {text[:40]!r}")
    return int(value)


def _floats(text: str, name: str, where: str) -> np.ndarray:
    text = text.strip()
    if len(text) >= 3 and text[:2] in ("b'", 'b"') and text[-1] == text[1]:
        text = text[2:-1]
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise DataFormatError(f"{where}: {name}: invalid base64 ({e})") from None
    if len(raw) % 4:
        raise DataFormatError(f"{where}: {name}: {len(raw)} bytes is not a whole number of float32 values")
    return np.frombuffer(raw, dtype="<f4").astype(np.float32)  # a writable native-order copy


def _parse(cells: list[str], names: list[str], where: str) -> RegionItem:
    if len(cells) != len(names):
        raise DataFormatError(f"{where}: {len(cells)} columns, expected {len(names)} ({', '.join(names)})")
    row = dict(zip(names, cells))
    try:
        image_id = image_id_of(row["image_id"])
    except DataFormatError as e:
        raise DataFormatError(f"{where}: {e}") from None
    num = _int(row["num_boxes"], "num_boxes", where)
    boxes = _floats(row["boxes"], "boxes", where)
    if boxes.size != 4 * num:
        raise DataFormatError(f"{where}: boxes: base64 holds {boxes.size} floats, num_boxes {num} needs {4 * num}")
    features = _floats(row["features"], "features", where)
    if num == 0:
        if features.size:
            raise DataFormatError(f"{where}: features: {features.size} floats for num_boxes 0")
        features = features.reshape(0, 0)
    elif features.size == 0 or features.size % num:
        raise DataFormatError(f"{where}: features: {features.size} floats are not num_boxes {num} x a feature dim")
    else:
        features = features.reshape(num, -1)
    boxes = boxes.reshape(num, 4)
    check_arrays(features, boxes, num, where)
    size = None
    if "image_w" in row and "image_h" in row:
        size = (_int(row["image_w"], "image_w", where), _int(row["image_h"], "image_h", where))
        size = size if min(size) > 0 else None
    return RegionItem(image_id, features, boxes, size, normalised_boxes=False)


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array, dtype="<f4").tobytes()).decode("ascii")


def write_butd_tsv(items: Iterable[RegionItem], dst: str | os.PathLike[str]) -> Path:
    """Header-less rows in the original column order (what every BUTD-derived loader expects);
    pixel boxes, float32 features. Images without a known size cannot be written (the format
    has no empty value for image_w / image_h)."""
    out = Path(dst)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    try:
        with open(tmp, "w", encoding="ascii", newline="") as f:
            for item in items:
                item = pixel_item(item, "tsv")
                if item.image_size is None:
                    raise ValueError(f"image {item.image_id}: unknown image size; the BUTD TSV needs image_w and image_h")
                w, h = item.image_size
                cells = [str(item.image_id), str(w), str(h), str(len(item.boxes)), _b64(item.boxes), _b64(item.features)]
                f.write("\t".join(cells) + "\n")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, out)
    return out
