"""Region features (BUTD-style detector boxes + one vector per box) in the formats people have.

=======  =========================================================  ==========================
name     layout                                                     module
=======  =========================================================  ==========================
tsv      bottom-up-attention TSV: ``image_id, image_w, image_h,     ``.butd_tsv``
         num_boxes, boxes, features`` (base64 float32), one row
         per image (peteanderson80's release; LXMERT/UNITER/VisualBERT)
npz      a directory of ``<image_id>.npz`` (``x``/``features``,     ``.npz_regions``
         ``bbox``/``boxes``, ``image_w``, ``image_h``, ``num_bbox``)
vlp      ``vlp-regions-1`` safetensors shards (a file or a folder)  ``vlp.data.regions``
=======  =========================================================  ==========================

Every reader yields ``RegionItem``s lazily (a COCO TSV is tens of GB) and never stops at a bad row:
a row with a wrong base64 length, a ``num_boxes`` that disagrees with its arrays, a feature width
unlike the first image's, or a repeated image id is skipped, counted in ``RegionReadStats`` and
named (file and row) in one ``DataWarning`` at the end, so every valid image of a partly broken
file is still converted. A file that is not of the format at all is a ``DataFormatError``.

Boxes are x1, y1, x2, y2. TSV and npz store pixels; ``vlp`` says in its metadata which it holds.
``boxes="normalised"`` / ``"pixels"`` converts by the image size (needed for either direction;
an image without a known size is then an error naming it). Pixel -> normalised -> pixel is exact
only up to float32 rounding; with ``boxes="keep"`` (the default) nothing is rounded, and float32
features are copied bit for bit between all three formats.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vlp.data.records import DataFormatError, DataWarning

__all__ = [
    "REGION_FORMATS",
    "RegionItem",
    "RegionOptions",
    "RegionReadStats",
    "guess_region_format",
    "image_id_of",
    "read_regions",
    "write_regions",
]

REGION_FORMATS = ("tsv", "npz", "vlp")
BOX_MODES = ("keep", "normalised", "pixels")


@dataclass
class RegionItem:
    """The regions of one image. ``features`` [R, F] float32 (float16/bfloat16 sources are widened,
    exactly); ``boxes`` [R, 4] float32; ``image_size`` (width, height) where the source has it."""

    image_id: int
    features: np.ndarray
    boxes: np.ndarray
    image_size: tuple[int, int] | None
    normalised_boxes: bool


@dataclass
class RegionReadStats:
    """What a region reader returned and skipped (overwritten by each read)."""

    images: int = 0
    regions: int = 0
    feature_dim: int | None = None
    malformed: int = 0
    examples: list[str] = field(default_factory=list)  # the first 10 skip messages (file and row)


@dataclass
class RegionOptions:
    """Options of region reading and writing; each format ignores the ones that are not its own."""

    tsv_fields: tuple[str, ...] | None = None  # tsv: column names when the file has no header (default BUTD order)
    boxes: str = "keep"  # "keep" | "normalised" | "pixels": convert boxes by the image size while reading
    feature_dtype: str = "float32"  # vlp writer: float32 (lossless), float16 or bfloat16
    images_per_shard: int = 2000  # vlp writer into a folder: 2000 x 36 x 2048 float32 is ~0.6 GB held per shard

    def __post_init__(self) -> None:
        if self.boxes not in BOX_MODES:
            raise ValueError(f"boxes must be one of {BOX_MODES}, got {self.boxes!r}")
        if self.feature_dtype not in ("float32", "float16", "bfloat16"):
            raise ValueError(f"feature_dtype must be float32, float16 or bfloat16, got {self.feature_dtype!r}")
        if self.images_per_shard < 1:
            raise ValueError(f"images_per_shard must be >= 1, got {self.images_per_shard}")


_TRAILING_DIGITS = re.compile(r"(\d+)$")


def image_id_of(text: str) -> int:
    """An integer image id from a TSV field or a file stem: ``42``, or the trailing number of a
    COCO-style name (``COCO_val2014_000000000042`` -> 42), which is how LXMERT names its rows and
    how vlp's caption files (Karpathy ``imgid``, COCO ``id``) number the same images."""
    text = text.strip()
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    match = _TRAILING_DIGITS.search(text)
    if match is None:
        raise DataFormatError(f"image id {text!r} is neither an integer nor a name ending in digits")
    return int(match.group(1))


def check_arrays(features: np.ndarray, boxes: np.ndarray, num_boxes: int | None, where: str, count_key: str = "num_boxes") -> None:
    """Shape checks every format shares; the message names the row or file."""
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise DataFormatError(f"{where}: boxes must be [R, 4], got {list(boxes.shape)}")
    if features.ndim != 2 or features.shape[0] != boxes.shape[0]:
        raise DataFormatError(f"{where}: features {list(features.shape)} do not match {boxes.shape[0]} boxes")
    if num_boxes is not None and num_boxes != boxes.shape[0]:
        raise DataFormatError(f"{where}: {count_key} is {num_boxes} but the arrays hold {boxes.shape[0]} boxes")
    if not (np.isfinite(boxes).all() and np.isfinite(features).all()):
        raise DataFormatError(f"{where}: boxes or features contain NaN or infinity")


def _convert_boxes(item: RegionItem, mode: str, where: str) -> RegionItem:
    want_normalised = {"keep": item.normalised_boxes, "normalised": True, "pixels": False}[mode]
    if want_normalised == item.normalised_boxes:
        return item
    if item.image_size is None or min(item.image_size) <= 0:
        raise DataFormatError(f"{where}: image {item.image_id} has no image size, so its boxes cannot be converted to {mode}")
    w, h = item.image_size
    scale = np.array([w, h, w, h], dtype=np.float32)
    boxes = item.boxes / scale if want_normalised else item.boxes * scale
    return RegionItem(item.image_id, item.features, boxes.astype(np.float32), item.image_size, want_normalised)


# A source yields (where, parse): parse() builds the item or raises DataFormatError for that row.
RowSource = Iterator[tuple[str, Callable[[], RegionItem]]]


def checked_items(rows: RowSource, source: str, mode: str, stats: RegionReadStats | None) -> Iterator[RegionItem]:
    """Validate across rows (one feature width, unique ids), convert boxes, skip and count bad rows."""
    stats = stats if stats is not None else RegionReadStats()
    stats.images = stats.regions = stats.malformed = 0
    stats.feature_dim, stats.examples = None, []
    first_at: dict[int, str] = {}
    dim_from = ""
    skipped: list[str] = []
    for where, parse in rows:
        try:
            item = _convert_boxes(parse(), mode, where)
            if item.image_id in first_at:
                raise DataFormatError(f"{where}: duplicate image id {item.image_id} (first in {first_at[item.image_id]})")
            if len(item.boxes):
                width = int(item.features.shape[1])
                if stats.feature_dim is None:
                    stats.feature_dim, dim_from = width, where
                elif width != stats.feature_dim:
                    raise DataFormatError(f"{where}: feature dim {width} differs from {stats.feature_dim} (set by {dim_from})")
        except DataFormatError as e:
            skipped.append(str(e))
            stats.malformed = len(skipped)
            stats.examples = skipped[:10]
            continue
        first_at[item.image_id] = where
        stats.images += 1
        stats.regions += len(item.boxes)
        yield item
    if skipped:
        shown = "; ".join(skipped[:3]) + ("; ..." if len(skipped) > 3 else "")
        warnings.warn(f"{len(skipped)} malformed region rows skipped while reading {source}: {shown}", DataWarning, stacklevel=2)


def guess_region_format(path: str | os.PathLike[str]) -> str:
    """tsv for ``*.tsv``/``*.csv``, vlp for ``*.safetensors`` or a folder of them, npz for a folder of ``*.npz``."""
    p = Path(path)
    if p.is_dir():
        if any(p.glob("*.safetensors")):
            return "vlp"
        if any(p.glob("*.npz")):
            return "npz"
        raise DataFormatError(f"{p}: a folder with neither *.safetensors nor *.npz files; pass the region format")
    suffix = p.suffix.lower()
    if suffix in (".tsv", ".csv", ".txt"):
        return "tsv"
    if suffix == ".safetensors":
        return "vlp"
    raise DataFormatError(f"{p}: cannot tell the region format from the name; pass one of {', '.join(REGION_FORMATS)}")


def check_region_format(fmt: str) -> str:
    if fmt not in REGION_FORMATS:
        raise ValueError(f"unknown region format {fmt!r}; known: {', '.join(REGION_FORMATS)}")
    return fmt


def read_regions(
    fmt: str,
    path: str | os.PathLike[str],
    options: RegionOptions | None = None,
    *,
    stats: RegionReadStats | None = None,
) -> Iterator[RegionItem]:
    """Region items of a file or folder in ``fmt``, lazily, in file order."""
    from vlp.data.formats.butd_tsv import tsv_rows
    from vlp.data.formats.npz_regions import npz_rows

    o = options or RegionOptions()
    rows = {"tsv": lambda: tsv_rows(path, o.tsv_fields), "npz": lambda: npz_rows(path), "vlp": lambda: vlp_rows(path)}
    return checked_items(rows[check_region_format(fmt)](), str(path), o.boxes, stats)


def vlp_shards(path: str | os.PathLike[str]) -> list[Path]:
    p = Path(path)
    if p.is_dir():
        shards = sorted(p.glob("*.safetensors"))
        if not shards:
            raise DataFormatError(f"{p}: no *.safetensors shards in this folder")
        return shards
    if not p.is_file():
        raise DataFormatError(f"{p}: no such file or folder")
    return [p]


def vlp_rows(path: str | os.PathLike[str]) -> RowSource:
    """Rows of ``vlp-regions-1`` shards; a shard that is not one raises before any row."""
    from vlp.data.regions import RegionFeatureReader

    try:
        reader = RegionFeatureReader(vlp_shards(path))
    except Exception as e:  # ValueError from the reader's checks, SafetensorError (no common base) on other files
        raise DataFormatError(f"{path}: not readable as vlp-regions-1: {e}") from e
    normalised = bool(reader.normalised_boxes)

    def parse(image_id: int) -> RegionItem:
        features, boxes = reader[image_id]
        return RegionItem(image_id, features.float().numpy(), boxes.float().numpy(), reader.image_size(image_id), normalised)

    for image_id in reader.image_ids:
        yield f"{path}: image {image_id}", lambda i=image_id: parse(i)


def write_regions(
    fmt: str, items: Iterable[RegionItem], dst: str | os.PathLike[str], options: RegionOptions | None = None
) -> list[Path]:
    """Write items as ``fmt`` at ``dst``: a ``.tsv`` file, a folder of ``.npz`` files, or for
    ``vlp`` one ``.safetensors`` file or a folder of ``regions-00000.safetensors`` shards.
    Returns the files written (for npz: the folder)."""
    from vlp.data.formats.butd_tsv import write_butd_tsv
    from vlp.data.formats.npz_regions import write_npz_dir

    o = options or RegionOptions()
    check_region_format(fmt)
    if fmt == "tsv":
        return [write_butd_tsv(items, dst)]
    if fmt == "npz":
        return [write_npz_dir(items, dst)]
    return write_vlp(items, dst, o)


def pixel_item(item: RegionItem, fmt: str) -> RegionItem:
    """TSV and npz store pixel boxes: normalised ones go back through the image size."""
    return _convert_boxes(item, "pixels", f"writing {fmt}") if item.normalised_boxes else item


def write_vlp(items: Iterable[RegionItem], dst: str | os.PathLike[str], options: RegionOptions) -> list[Path]:
    """One shard when ``dst`` ends in ``.safetensors``, else shards of ``images_per_shard`` images in
    the folder ``dst`` (memory holds one shard at a time)."""
    import torch

    from vlp.data.regions import write_region_features

    out = Path(dst)
    single = out.suffix == ".safetensors"
    dtype = getattr(torch, options.feature_dtype)
    written: list[Path] = []
    chunk: list[RegionItem] = []
    normalised: bool | None = None

    def flush() -> None:
        name = out if single else out / f"regions-{len(written):05d}.safetensors"
        sizes = {it.image_id: it.image_size for it in chunk if it.image_size is not None}
        triples = ((it.image_id, torch.from_numpy(it.features), torch.from_numpy(it.boxes)) for it in chunk)
        written.append(write_region_features(name, triples, dtype=dtype, normalised_boxes=bool(normalised), image_sizes=sizes))
        chunk.clear()

    for item in items:
        if normalised is None:
            normalised = item.normalised_boxes
        elif item.normalised_boxes != normalised:
            raise ValueError(f"image {item.image_id}: mixes normalised and pixel boxes in one vlp-regions file")
        chunk.append(item)
        if not single and len(chunk) == options.images_per_shard:
            flush()
    if chunk or not written:
        if not chunk:
            raise ValueError(f"no region items to write to {out}")
        flush()
    return written
