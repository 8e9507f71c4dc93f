"""``vlp data inspect --kind regions``: what a region-feature file holds before a BUTD-style run uses it.

Counts images and regions, the regions-per-image histogram (BUTD extracts a fixed 36 or an
adaptive 10-100 per image; a spike at 0 or 1 means the detector found nothing), the feature width,
whether boxes are pixels or normalised, how many images carry their size, and problems: malformed
rows (skipped by the reader, named here), degenerate boxes (x2 <= x1 or y2 <= y1) and boxes that
leave the image. One pass over the file, one image in memory at a time.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field

import numpy as np

from vlp.data.formats.region_files import RegionOptions, RegionReadStats, read_regions
from vlp.data.inspect import _histogram
from vlp.data.records import DataWarning

__all__ = ["REGION_BINS", "RegionReport", "format_region_report", "inspect_regions"]

REGION_BINS = (0, 1, 10, 20, 36, 37, 50, 100)  # regions per image: 0, 1-9, 10-19, 20-35, 36, 37-49, 50-99, 100+


@dataclass
class RegionReport:
    source: str
    format: str
    read: RegionReadStats = field(default_factory=RegionReadStats)
    per_image: list[int] = field(default_factory=lambda: [0] * len(REGION_BINS))
    boxes: str = "pixels"  # "pixels" | "normalised" | "mixed"
    with_size: int = 0
    degenerate_boxes: int = 0
    outside_boxes: int = 0
    min_regions: int = 0
    max_regions: int = 0


def _bin(value: int) -> int:
    return int(np.searchsorted(REGION_BINS, value, side="right")) - 1


def inspect_regions(fmt: str, path: str | os.PathLike[str], options: RegionOptions | None = None) -> RegionReport:
    report = RegionReport(str(path), fmt)
    modes: set[bool] = set()
    counts: list[int] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)  # counted in report.read instead
        for item in read_regions(fmt, path, options, stats=report.read):
            n = len(item.boxes)
            counts.append(n)
            report.per_image[_bin(n)] += 1
            modes.add(item.normalised_boxes)
            report.with_size += item.image_size is not None
            if not n:
                continue
            x1, y1, x2, y2 = item.boxes.T
            report.degenerate_boxes += int(((x2 <= x1) | (y2 <= y1)).sum())
            limit = (1.0, 1.0) if item.normalised_boxes else item.image_size
            if limit is not None:
                w, h = limit
                report.outside_boxes += int(((x1 < 0) | (y1 < 0) | (x2 > w) | (y2 > h)).sum())
    report.boxes = "mixed" if len(modes) > 1 else ("normalised" if modes == {True} else "pixels")
    report.min_regions, report.max_regions = (min(counts), max(counts)) if counts else (0, 0)
    return report


def format_region_report(report: RegionReport, max_examples: int = 5) -> str:
    r = report.read
    mean = r.regions / max(r.images, 1)
    lines = [
        f"region features   {report.source}  (format {report.format})",
        "",
        f"images            {r.images}",
        f"regions           {r.regions}  (mean {mean:.1f}, min {report.min_regions}, max {report.max_regions} per image)",
        f"feature dim       {r.feature_dim if r.feature_dim is not None else '-'}",
        f"boxes             {report.boxes}",
        f"image sizes known {report.with_size} of {r.images}",
        "",
    ]
    lines += _histogram("regions per image", REGION_BINS, report.per_image, "boxes")
    lines += ["", "problems"]
    for name, count in (("malformed rows (skipped)", r.malformed), ("degenerate boxes", report.degenerate_boxes),
                        ("boxes outside the image", report.outside_boxes)):
        lines.append(f"  {name:<38}{count:>8}")
    lines += [f"    {e}" for e in r.examples[:max_examples]]
    if r.malformed > max_examples:
        lines.append(f"    ... and {r.malformed - max_examples} more")
    return "\n".join(lines)
