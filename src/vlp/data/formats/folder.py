"""Image folders with side-car captions: ``cat.jpg`` + ``cat.txt`` (one caption per line).

The layout many scraped or hand-made datasets start from. The folder is scanned recursively in
sorted order (so image ids are stable); with ``split_dirs`` the first directory level names the
split (``root/train/...``, ``root/test/...``), otherwise every image gets ``split``. An image
without a ``.txt`` (or with only blank lines) is counted as an image without captions.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable
from dataclasses import replace
from pathlib import Path, PurePosixPath

from vlp.data.formats.common import IMAGE_EXTENSIONS, ImageSample, ReencodeStats, check_new_name, written_images
from vlp.data.readers import _abs, _normalise_splits, finish_records
from vlp.data.records import DataFormatError, ImageRecord, ReadStats

__all__ = ["read_folder", "write_folder"]


def read_folder(
    root: str | os.PathLike[str],
    *,
    split: str = "train",
    split_dirs: bool = False,
    splits: Collection[str] | None = None,
    stats: ReadStats | None = None,
) -> list[ImageRecord]:
    """Records of every image under ``root`` with the lines of its side-car ``.txt`` as captions."""
    base = _abs(Path(root))
    if not base.is_dir():
        raise DataFormatError(f"{base}: not a directory (the folder format reads images + .txt captions from one)")
    wanted = _normalise_splits(splits)
    images = sorted(p for p in base.rglob("*") if p.suffix.lower().lstrip(".") in IMAGE_EXTENSIONS and p.is_file())
    stems: dict[Path, Path] = {}
    candidates: list[tuple[int, Path, str, list[str]]] = []
    for image_id, image in enumerate(images):
        sidecar = image.with_suffix(".txt")
        if sidecar in stems:
            raise DataFormatError(f"{image} and {stems[sidecar]} share the caption file {sidecar.name}; rename one")
        stems[sidecar] = image
        rel = image.relative_to(base)
        if split_dirs:
            if len(rel.parts) < 2:
                raise DataFormatError(f"{image}: with split_dirs every image must be inside a split folder (root/SPLIT/...)")
            image_split = rel.parts[0]
        else:
            image_split = split
        if wanted is not None and image_split not in wanted:
            continue
        try:
            captions = sidecar.read_text(encoding="utf-8").splitlines() if sidecar.is_file() else []
        except UnicodeDecodeError as e:
            raise DataFormatError(f"{sidecar}: not UTF-8 text: {e}") from e
        candidates.append((image_id, image, image_split, captions))
    return finish_records(candidates, base, base, stats)


def write_folder(
    samples: Iterable[ImageSample],
    root: str | os.PathLike[str],
    *,
    split_dirs: bool = True,
    image_format: str | None = None,
    stats: ReencodeStats | None = None,
) -> int:
    """Write images (under ``root/SPLIT/`` with ``split_dirs``) and their side-car ``.txt`` files.

    Captions are single lines already (readers collapse whitespace). Image ids are not stored:
    the reader numbers images in sorted order. Returns the number of images written.
    """
    base = Path(root)
    stats = stats if stats is not None else ReencodeStats()
    if split_dirs:
        samples = (replace(s, name=f"{s.split}/{s.name}") for s in samples)
    sidecars: set[str] = set()
    written = 0
    for sample, name in written_images(samples, base, image_format, stats):
        sidecar = str(PurePosixPath(name).with_suffix(".txt"))
        check_new_name(sidecars, sidecar, base)
        (base / sidecar).write_text("".join(c + "\n" for c in sample.captions), encoding="utf-8")
        written += 1
    return written
