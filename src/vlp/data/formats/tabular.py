"""CSV / TSV: one row per (image, caption), open_clip's convention.

open_clip trains from a CSV with an image-path column and a caption column
(``--csv-img-key filepath --csv-caption-key title --csv-separator "\\t"``); the same image may
appear on several rows, which are grouped into one record with several captions. Optional
columns: a split column (``split_key``) and ``image_id`` (our writer writes both, so a round trip
keeps splits and ids). Paths are relative to ``image_root`` (default: the file's folder); URLs are
counted and skipped, never fetched.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Collection, Iterable
from pathlib import Path

from vlp.data.formats.common import ImageSample, ReencodeStats, Row, group_rows, written_images
from vlp.data.readers import _abs, _normalise_splits
from vlp.data.records import DataFormatError, ImageRecord, ReadStats

__all__ = ["read_csv", "write_csv"]


def read_csv(
    path: str | os.PathLike[str],
    image_root: str | os.PathLike[str] | None = None,
    *,
    img_key: str = "filepath",
    caption_key: str = "title",
    sep: str = ",",
    split_key: str | None = "split",
    split: str = "train",
    id_key: str = "image_id",
    splits: Collection[str] | None = None,
    stats: ReadStats | None = None,
) -> list[ImageRecord]:
    """Read a CSV/TSV caption file (``sep="\\t"`` for TSV).

    Every row's split is its ``split_key`` column when the file has that column, otherwise
    ``split`` (one file per split). ``splits`` filters, as in ``read_karpathy``.
    """
    file = Path(path)
    root = _abs(file.parent if image_root is None else Path(image_root))
    if len(sep) != 1:
        raise ValueError(f"the separator must be one character, got {sep!r}")
    try:
        with open(file, encoding="utf-8-sig", newline="") as f:  # -sig: Excel writes a BOM
            reader = csv.DictReader(f, delimiter=sep)
            columns = reader.fieldnames or []
            for key in (img_key, caption_key):
                if key not in columns:
                    raise DataFormatError(
                        f"{file}: no column {key!r} (columns: {columns}); set the image/caption column names"
                        f" (csv_image_key / csv_caption_key) or the separator (now {sep!r})"
                    )
            has_split = split_key is not None and split_key in columns
            has_id = id_key in columns
            rows = [_row(r, i + 2, file, img_key, caption_key, split_key if has_split else None, split, id_key if has_id else None) for i, r in enumerate(reader)]
    except UnicodeDecodeError as e:
        raise DataFormatError(f"{file}: not UTF-8 text: {e}") from e
    except csv.Error as e:
        raise DataFormatError(f"{file}: malformed CSV: {e}") from e
    return group_rows(rows, file, root, _normalise_splits(splits), stats)


def _row(r: dict, line: int, file: Path, img_key: str, caption_key: str, split_key: str | None, split: str, id_key: str | None) -> Row:
    where = f"line {line}"
    image, caption = r.get(img_key), r.get(caption_key)
    if image is None or caption is None:  # a short row: DictReader fills missing cells with None
        raise DataFormatError(f"{file}: {where}: fewer cells than columns")
    if not image.strip():
        raise DataFormatError(f"{file}: {where}.{img_key}: empty image path")
    image_id = None
    if id_key is not None and (r.get(id_key) or "").strip():
        try:
            image_id = int(r[id_key])
        except ValueError:
            raise DataFormatError(f"{file}: {where}.{id_key}: expected an integer, got {r[id_key]!r}") from None
    row_split = (r.get(split_key) or "").strip() if split_key is not None else split
    return Row(where, image.strip(), (caption,), row_split or split, image_id)


def write_csv(
    samples: Iterable[ImageSample],
    path: str | os.PathLike[str],
    *,
    img_key: str = "filepath",
    caption_key: str = "title",
    sep: str = ",",
    split_key: str = "split",
    image_format: str | None = None,
    stats: ReencodeStats | None = None,
) -> int:
    """Write one row per caption and the images next to the file (at their sample names).

    Returns the number of rows. Columns: ``img_key``, ``caption_key``, ``split_key``, ``image_id``.
    """
    file = Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    stats = stats if stats is not None else ReencodeStats()
    rows = 0
    with open(file, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter=sep, lineterminator="\n")
        writer.writerow([img_key, caption_key, split_key, "image_id"])
        for sample, name in written_images(samples, file.parent, image_format, stats):
            for caption in sample.captions:
                writer.writerow([name, caption, sample.split, sample.image_id])
                rows += 1
    return rows

