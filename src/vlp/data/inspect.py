"""``vlp data inspect``: what is in a dataset and what is wrong with it, before a run trains on it.

Counts images, captions and splits; histograms of caption lengths (words) and image sizes (the
shorter side, read from headers only: PIL opens lazily, so a 100k-image folder is inspected without
decoding pixels); and problems: unreadable images, missing files, URL images, empty captions,
images left without captions, the same image file listed twice, byte-identical image files under
different names, and a caption repeated for one image. Reader-level problems come from the
reader's ``ReadStats`` (the same counts a training run warns about).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from vlp.data.formats import FormatOptions, read_samples
from vlp.data.images import CorruptImageError, decode_rgb, image_size, load_rgb
from vlp.data.records import DataWarning, ReadStats

__all__ = ["DatasetReport", "inspect_dataset", "format_report", "CAPTION_BINS", "SIZE_BINS"]

CAPTION_BINS = (0, 5, 10, 15, 20, 30, 50)  # words: [0,5), [5,10), ..., [50, inf)
SIZE_BINS = (0, 64, 128, 256, 512, 1024, 2048)  # shorter image side in pixels


@dataclass
class DatasetReport:
    source: str
    format: str
    images: int = 0
    captions: int = 0
    splits: dict[str, tuple[int, int]] = field(default_factory=dict)  # split -> (images, captions)
    caption_words: list[int] = field(default_factory=lambda: [0] * len(CAPTION_BINS))
    image_sides: list[int] = field(default_factory=lambda: [0] * len(SIZE_BINS))
    read: ReadStats = field(default_factory=ReadStats)
    unreadable: list[str] = field(default_factory=list)  # "path: reason"
    duplicate_paths: int = 0  # an image file listed by two records
    duplicate_files: int = 0  # byte-identical to an earlier image under another name
    duplicate_captions: int = 0  # a caption repeated for the same image
    mean_words: float = 0.0

    @property
    def problems(self) -> dict[str, int]:
        return {
            "unreadable images": len(self.unreadable),
            "missing image files": self.read.missing_images,
            "URL images (not downloadable here)": self.read.url_images,
            "empty captions": self.read.empty_captions,
            "images without captions": self.read.images_without_captions,
            "image listed twice": self.duplicate_paths,
            "byte-identical images": self.duplicate_files,
            "caption repeated for an image": self.duplicate_captions,
        }


def _bin(value: int, edges: Sequence[int]) -> int:
    i = 0
    while i + 1 < len(edges) and value >= edges[i + 1]:
        i += 1
    return i


def inspect_dataset(
    fmt: str,
    path: str | os.PathLike[str],
    options: FormatOptions | None = None,
    splits: Collection[str] | None = None,
    *,
    decode: bool = False,
    hash_files: bool = True,
) -> DatasetReport:
    """Inspect a dataset of any format. ``decode`` fully decodes every image (finds truncated files,
    much slower); otherwise only headers are read. ``hash_files`` finds byte-identical images."""
    report = DatasetReport(str(path), fmt)
    seen_paths: set[str] = set()
    seen_hashes: set[bytes] = set()
    words_total = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)  # counted in report.read instead
        for sample in read_samples(fmt, path, options, splits, stats=report.read):
            report.images += 1
            report.captions += len(sample.captions)
            images, captions = report.splits.get(sample.split, (0, 0))
            report.splits[sample.split] = (images + 1, captions + len(sample.captions))
            for caption in sample.captions:
                words = len(caption.split())
                words_total += words
                report.caption_words[_bin(words, CAPTION_BINS)] += 1
            report.duplicate_captions += len(sample.captions) - len(set(sample.captions))
            if sample.path is not None:
                key = os.fspath(sample.path)
                report.duplicate_paths += key in seen_paths
                seen_paths.add(key)
            try:
                if decode:
                    img = load_rgb(sample.path) if sample.path is not None else decode_rgb(sample.read_bytes(), sample.name)
                    size = img.size
                else:
                    size = image_size(sample.path if sample.path is not None else sample.read_bytes(), name=sample.where())
            except CorruptImageError as e:
                report.unreadable.append(str(e))
                continue
            report.image_sides[_bin(min(size), SIZE_BINS)] += 1
            if hash_files:
                digest = hashlib.blake2b(sample.read_bytes(), digest_size=16).digest()
                report.duplicate_files += digest in seen_hashes
                seen_hashes.add(digest)
    report.mean_words = words_total / report.captions if report.captions else 0.0
    return report


def _histogram(title: str, edges: Sequence[int], counts: Sequence[int], unit: str, width: int = 40) -> list[str]:
    total = max(sum(counts), 1)
    peak = max(max(counts), 1)
    lines = [title]
    for i, count in enumerate(counts):
        last = edges[i + 1] - 1 if i + 1 < len(edges) else None
        label = f"{edges[i]}+" if last is None else (str(last) if last == edges[i] else f"{edges[i]}-{last}")
        bar = "#" * round(width * count / peak)
        lines.append(f"  {label:>10} {unit:<6}{count:>8}  {100 * count / total:5.1f}%  {bar}")
    return lines


def format_report(report: DatasetReport, max_examples: int = 5) -> str:
    """The report as a readable plain-text table."""
    lines = [f"dataset   {report.source}  (format {report.format})", ""]
    lines.append(f"{'split':<14}{'images':>10}{'captions':>10}{'captions/image':>16}")
    for split, (images, captions) in sorted(report.splits.items()):
        lines.append(f"{split:<14}{images:>10}{captions:>10}{captions / max(images, 1):>16.2f}")
    lines.append(f"{'total':<14}{report.images:>10}{report.captions:>10}{report.captions / max(report.images, 1):>16.2f}")
    lines.append("")
    lines += _histogram(f"caption length (words; mean {report.mean_words:.1f})", CAPTION_BINS, report.caption_words, "words")
    lines.append("")
    lines += _histogram("image size (shorter side, from headers)", SIZE_BINS, report.image_sides, "px")
    lines.append("")
    lines.append("problems")
    for name, count in report.problems.items():
        lines.append(f"  {name:<38}{count:>8}")
    for example in report.unreadable[:max_examples]:
        lines.append(f"    {example}")
    if len(report.unreadable) > max_examples:
        lines.append(f"    ... and {len(report.unreadable) - max_examples} more")
    return "\n".join(lines)
