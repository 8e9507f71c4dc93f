"""What every format module shares: the portable ``ImageSample``, image-reference resolution
(local path or URL) and writing image files.

Readers of file-based formats return ``ImageRecord`` lists (as ``vlp.data.readers`` does);
conversion needs one more thing a record cannot carry, the image bytes of a WebDataset member,
so writers take ``ImageSample``s: a record's fields plus either a source path or the bytes, and
the relative name the image gets in the written dataset.
"""

from __future__ import annotations

import io
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from vlp.data.images import CorruptImageError, decode_rgb, load_rgb
from vlp.data.readers import finish_records
from vlp.data.records import DataFormatError, ImageRecord, ReadStats

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageSample",
    "samples_from_records",
    "is_url",
    "resolve_image",
    "write_image",
    "encode_image",
    "ReencodeStats",
    "Row",
    "group_rows",
    "check_new_name",
    "written_images",
]

# Extensions (lower case, no dot) treated as images by the folder and WebDataset formats.
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")

_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


@dataclass(frozen=True)
class ImageSample:
    """One image with its captions, in a form every writer accepts.

    ``name`` is the relative POSIX path the image gets inside a written dataset (it keeps the
    source layout, e.g. ``images/0001.jpg``, so A -> B -> A restores the same files). Exactly one
    of ``path`` (a file) and ``data`` (encoded bytes, e.g. from a shard) is set.
    """

    image_id: int
    split: str
    captions: tuple[str, ...]
    name: str
    path: Path | None = None
    data: bytes | None = None

    def __post_init__(self) -> None:
        if (self.path is None) == (self.data is None):
            raise ValueError(f"ImageSample {self.name!r}: give exactly one of path and data")
        pure = PurePosixPath(self.name)
        if not self.name or pure.is_absolute() or ".." in pure.parts:
            raise ValueError(f"ImageSample name must be a relative path inside the dataset, got {self.name!r}")

    @property
    def suffix(self) -> str:
        """Lower-case extension without the dot (``jpg``), as WebDataset member names use it."""
        return PurePosixPath(self.name).suffix.lower().lstrip(".")

    def read_bytes(self) -> bytes:
        return self.data if self.data is not None else Path(self.path).read_bytes()  # type: ignore[arg-type]

    def where(self) -> str:
        """How to name this image in a message."""
        return os.fspath(self.path) if self.path is not None else self.name


def samples_from_records(records: Iterable[ImageRecord], root: str | os.PathLike[str]) -> Iterator[ImageSample]:
    """Samples of file-backed records; names are the paths relative to ``root`` (the dataset's
    image root). Images outside ``root`` are named ``images/{image_id}{ext}``."""
    base = Path(os.path.abspath(root))
    for record in records:
        try:
            rel = Path(record.path).relative_to(base).as_posix()
        except ValueError:
            rel = f"images/{record.image_id}{Path(record.path).suffix.lower()}"
        yield ImageSample(record.image_id, record.split, record.captions, rel, path=Path(record.path))


def is_url(reference: str) -> bool:
    """``http://...``, ``https://...``, ``s3://...``: an image vlp will not download."""
    return bool(_URL.match(reference))


def resolve_image(root: Path, reference: str) -> Path | None:
    """The absolute path of an image reference relative to ``root``; None for a URL."""
    if is_url(reference):
        return None
    return Path(os.path.abspath(root / os.path.expanduser(reference)))


@dataclass
class ReencodeStats:
    """What ``write_image`` did over a whole conversion (accumulated)."""

    copied: int = 0  # bytes copied unchanged
    reencoded: int = 0
    unreadable: int = 0  # could not be decoded for re-encoding: left out


def encode_image(sample: ImageSample, image_format: str | None, stats: ReencodeStats) -> tuple[str, bytes | None] | None:
    """The name and, when re-encoded, the new bytes of a sample's image (None bytes: use the source as is).

    Without ``image_format`` the bytes are kept unchanged (so pixels, EXIF and file hashes survive
    a conversion); with ``"jpg"`` / ``"png"`` an image in another format is decoded to RGB (EXIF
    orientation applied) and re-encoded (JPEG quality 95), one already in that format is kept byte
    for byte, and an undecodable one is counted and left out (returns None).
    """
    if image_format is None:
        stats.copied += 1
        return sample.name, None
    fmt = image_format.lower().lstrip(".")
    if fmt not in ("jpg", "jpeg", "png"):
        raise ValueError(f"image_format must be 'jpg' or 'png', got {image_format!r}")
    target = "jpg" if fmt in ("jpg", "jpeg") else "png"
    if sample.suffix in (("jpg", "jpeg") if target == "jpg" else ("png",)):
        stats.copied += 1
        return sample.name, None
    try:
        img = load_rgb(sample.path) if sample.path is not None else decode_rgb(sample.read_bytes(), sample.name)
    except CorruptImageError:
        stats.unreadable += 1
        return None
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG" if target == "jpg" else "PNG", quality=95)
    stats.reencoded += 1
    return str(PurePosixPath(sample.name).with_suffix("." + target)), buffer.getvalue()


def write_image(sample: ImageSample, dst_root: Path, image_format: str | None, stats: ReencodeStats) -> str | None:
    """Write the sample's image under ``dst_root`` (see ``encode_image``); returns its name there,
    or None when it could not be re-encoded. Unchanged files are copied with ``shutil.copyfile``."""
    encoded = encode_image(sample, image_format, stats)
    if encoded is None:
        return None
    name, data = encoded
    out = dst_root / name
    out.parent.mkdir(parents=True, exist_ok=True)
    if data is not None:
        out.write_bytes(data)
    elif sample.path is not None:
        if os.path.abspath(sample.path) != os.path.abspath(out):
            shutil.copyfile(sample.path, out)
    else:
        out.write_bytes(sample.read_bytes())
    return name


@dataclass(frozen=True)
class Row:
    """One row/line of a flat annotation file, before rows of one image are grouped."""

    where: str  # "line 12", "row 3": for error messages
    image: str  # path relative to the root, or a URL
    captions: tuple[str, ...]
    split: str
    image_id: int | None = None


def group_rows(rows: Iterable[Row], path: Path, root: Path, splits: frozenset[str] | None, stats: ReadStats | None) -> list[ImageRecord]:
    """Rows -> records: rows naming the same image become one record with all their captions.

    Image ids come from the rows when every row of the file has one (as our writers write them),
    otherwise they are the order of first appearance. An image listed under two splits is an
    error (it would leak test images into training). URL images are counted and dropped.
    """
    order: list[Path] = []
    grouped: dict[Path, tuple[str, int | None, list[str], str]] = {}
    urls = 0
    for row in rows:
        resolved = resolve_image(root, row.image)
        if resolved is None:
            urls += splits is None or row.split in splits
            continue
        if resolved not in grouped:
            order.append(resolved)
            grouped[resolved] = (row.where, row.image_id, [], row.split)
        first_where, image_id, captions, split = grouped[resolved]
        if split != row.split:
            raise DataFormatError(
                f"{path}: {row.where}: image {row.image!r} is in split {row.split!r} but {first_where} puts it in "
                f"{split!r}; an image must belong to one split"
            )
        if row.image_id is not None and image_id is not None and row.image_id != image_id:
            raise DataFormatError(f"{path}: {row.where}: image {row.image!r} has id {row.image_id}, {first_where} says {image_id}")
        captions.extend(row.captions)
    ids = [grouped[p][1] for p in order]
    if ids and all(i is not None for i in ids):
        seen: dict[int, str] = {}
        for p in order:
            where, image_id = grouped[p][0], grouped[p][1]
            if image_id in seen:
                raise DataFormatError(f"{path}: {where}: duplicate image id {image_id} (also {seen[image_id]}) for different images")
            seen[image_id] = where  # type: ignore[index]
    else:
        ids = list(range(len(order)))
    candidates = [
        (int(i), p, grouped[p][3], grouped[p][2])  # type: ignore[arg-type]
        for i, p in zip(ids, order)
        if splits is None or grouped[p][3] in splits
    ]
    return finish_records(candidates, path, root, stats, urls=urls)


def check_new_name(names: set[str], name: str, dst: Path) -> None:
    """Writers call this per image: two samples with one name would overwrite each other."""
    if name in names:
        raise DataFormatError(f"{dst}: two images would be written to the same name {name!r}")
    names.add(name)


def written_images(
    samples: Iterable[ImageSample], dst_root: Path, image_format: str | None, stats: ReencodeStats
) -> Iterator[tuple[ImageSample, str]]:
    """Write every sample's image under ``dst_root`` and yield ``(sample, name written)``; what
    could not be re-encoded is left out (counted in ``stats``), a repeated name is an error. The
    loop of every file-based writer, which then records the captions in its own layout."""
    names: set[str] = set()
    for sample in samples:
        name = write_image(sample, dst_root, image_format, stats)
        if name is not None:
            check_new_name(names, name, dst_root)
            yield sample, name
