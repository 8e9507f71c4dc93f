"""Every supported image-caption dataset format, read and written through one interface.

=========  ==============================================  ======================================
name       source / destination                            module
=========  ==============================================  ======================================
karpathy   ``dataset_coco.json`` (+ images under its dir)  ``vlp.data.readers`` / ``.karpathy``
coco       ``captions_*.json`` (``images``+``annotations``)  ``vlp.data.readers`` / ``.karpathy``
csv, tsv   one row per caption (open_clip's layout)        ``.tabular``
jsonl      ``{"image", "caption"|"captions"|"text"}``       ``.jsonl`` (also ``.json`` lists)
folder     ``x.jpg`` + ``x.txt`` side-cars                  ``.folder``
wds        ``.tar`` shards, img2dataset layout              ``.wds`` (streaming: ``.wds_stream``)
=========  ==============================================  ======================================

Questions with answers (``vqav2``, ``jsonl``) live in ``.vqa_files``; detector region features
(``tsv``, ``npz``, ``vlp``) in ``.region_files``; ``vlp data convert|inspect --kind vqa|regions``
reaches them.

``read_records`` gives ``ImageRecord`` lists (what map-style datasets and evaluation use);
``read_samples`` / ``write_samples`` move ``ImageSample``s between any two formats (``vlp data
convert``). Options that only some formats use live in one ``FormatOptions``.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from vlp.data.formats.common import ImageSample, ReencodeStats, samples_from_records
from vlp.data.records import ImageRecord, ReadStats

__all__ = [
    "FORMATS",
    "FormatOptions",
    "ImageSample",
    "ReencodeStats",
    "read_records",
    "read_samples",
    "write_samples",
    "check_format",
]

FORMATS = ("karpathy", "coco", "csv", "tsv", "jsonl", "folder", "wds")


@dataclass
class FormatOptions:
    """Format-specific reading/writing options; each format ignores the ones that are not its own."""

    image_root: str | None = None  # karpathy/coco/csv/jsonl: root of relative image paths (default: the file's folder)
    csv_image_key: str = "filepath"  # open_clip's --csv-img-key
    csv_caption_key: str = "title"  # open_clip's --csv-caption-key
    separator: str | None = None  # csv: ","; tsv: "\t"
    split_key: str = "split"  # csv: the split column, used when the file has it
    split: str = "train"  # the split of entries that name none (coco, csv without split column, folder, ...)
    split_dirs: bool = False  # folder: the first directory level is the split (written that way by default)
    image_key: str = "image"  # jsonl: the image field
    samples_per_shard: int = 1000  # wds writer
    image_format: str | None = None  # writers: None copies image bytes; "jpg"/"png" re-encodes others

    def sep(self, fmt: str) -> str:
        return self.separator if self.separator is not None else ("\t" if fmt == "tsv" else ",")


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown data format {fmt!r}; known: {', '.join(FORMATS)}")
    return fmt


def read_records(
    fmt: str,
    path: str | os.PathLike[str],
    options: FormatOptions | None = None,
    splits: Collection[str] | None = None,
    *,
    stats: ReadStats | None = None,
) -> list[ImageRecord]:
    """Records of a file-based dataset. WebDataset shards hold images inside tar files, not as
    paths a record can name: stream them with ``WebDatasetStream`` or convert them first."""
    from vlp.data.formats.folder import read_folder
    from vlp.data.formats.jsonl import read_jsonl
    from vlp.data.formats.tabular import read_csv
    from vlp.data.readers import _normalise_splits, read_coco_captions, read_karpathy

    check_format(fmt)
    o = options or FormatOptions()
    if fmt == "karpathy":
        return read_karpathy(path, image_root=o.image_root, splits=splits, stats=stats)
    if fmt == "coco":
        records = read_coco_captions(path, o.image_root if o.image_root is not None else Path(path).parent, split=o.split, stats=stats)
        wanted = _normalise_splits(splits)
        return records if wanted is None or o.split in wanted else []
    if fmt in ("csv", "tsv"):
        return read_csv(
            path, o.image_root, img_key=o.csv_image_key, caption_key=o.csv_caption_key, sep=o.sep(fmt),
            split_key=o.split_key, split=o.split, splits=splits, stats=stats,
        )
    if fmt == "jsonl":
        return read_jsonl(path, o.image_root, image_key=o.image_key, split=o.split, splits=splits, stats=stats)
    if fmt == "folder":
        return read_folder(path, split=o.split, split_dirs=o.split_dirs, splits=splits, stats=stats)
    raise ValueError(
        "WebDataset shards (data.format=wds) are streamed, not read into records: use "
        "vlp.data.formats.wds_stream.WebDatasetStream, or `vlp data convert SRC DST --from wds --to jsonl` first"
    )


def image_root_of(fmt: str, path: str | os.PathLike[str], options: FormatOptions) -> Path:
    """The folder image names are relative to, for each file-based format."""
    if fmt == "folder":
        return Path(path)
    return Path(options.image_root) if options.image_root is not None else Path(path).parent


def read_samples(
    fmt: str,
    path: str | os.PathLike[str],
    options: FormatOptions | None = None,
    splits: Collection[str] | None = None,
    *,
    stats: ReadStats | None = None,
) -> Iterator[ImageSample]:
    """``ImageSample``s of any format (for conversion): names keep the source's relative layout."""
    check_format(fmt)
    o = options or FormatOptions()
    if fmt == "wds":
        from vlp.data.formats.wds import read_wds

        return read_wds(path, split=o.split, splits=splits, stats=stats)
    records = read_records(fmt, path, o, splits, stats=stats)
    return samples_from_records(records, os.path.abspath(image_root_of(fmt, path, o)))


def write_samples(
    fmt: str,
    samples: Iterable[ImageSample],
    dst: str | os.PathLike[str],
    options: FormatOptions | None = None,
    *,
    stats: ReencodeStats | None = None,
) -> list[Path]:
    """Write samples as ``fmt`` at ``dst`` (a file for csv/tsv/jsonl, a directory otherwise, where
    karpathy writes ``dataset_coco.json``, coco ``captions_{split}.json``, wds ``00000.tar``...).
    Returns the annotation files or shards written."""
    from vlp.data.formats.folder import write_folder
    from vlp.data.formats.jsonl import write_jsonl
    from vlp.data.formats.karpathy import write_coco, write_karpathy
    from vlp.data.formats.tabular import write_csv
    from vlp.data.formats.wds import write_wds

    check_format(fmt)
    o = options or FormatOptions()
    stats = stats if stats is not None else ReencodeStats()
    kw = {"image_format": o.image_format, "stats": stats}
    if fmt == "karpathy":
        return [write_karpathy(samples, dst, **kw)]
    if fmt == "coco":
        return write_coco(samples, dst, **kw)
    if fmt in ("csv", "tsv"):
        write_csv(samples, dst, img_key=o.csv_image_key, caption_key=o.csv_caption_key, sep=o.sep(fmt), split_key=o.split_key, **kw)
        return [Path(dst)]
    if fmt == "jsonl":
        write_jsonl(samples, dst, **kw)
        return [Path(dst)]
    if fmt == "folder":
        write_folder(samples, dst, split_dirs=True, **kw)
        return [Path(dst)]
    return write_wds(samples, dst, samples_per_shard=o.samples_per_shard, **kw)
