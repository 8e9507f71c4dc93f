"""`vlp data convert` / `vlp data inspect` through the CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlp.cli.main import main
from vlp.data.formats import read_records
from vlp.data.inspect import inspect_dataset


def _png(root: Path, name: str, size=(40, 30), seed=0, smooth=False) -> None:
    rng = np.random.default_rng(seed)
    if smooth:  # a gradient JPEG keeps close to: checks re-encoding changed format, not content
        y, x = np.mgrid[0 : size[1], 0 : size[0]]
        pixels = np.stack([x * 255 // size[0], y * 255 // size[1], np.full_like(x, 40 * seed)], -1).astype(np.uint8)
    else:
        pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(root / name)


def test_convert_csv_to_wds_to_karpathy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "src").mkdir()
    for i in range(5):
        _png(tmp_path / "src", f"{i}.png", seed=i, smooth=True)
    rows = "".join(f"{i}.png\tcaption number {i}\n{i}.png\tsecond for {i}\n" for i in range(5))
    (tmp_path / "src" / "d.tsv").write_text("filepath\ttitle\n" + rows)
    assert main(["data", "convert", str(tmp_path / "src" / "d.tsv"), str(tmp_path / "wds"), "--from", "tsv", "--to", "wds",
                 "--samples-per-shard", "2", "--image-format", "jpg"]) == 0
    out = capsys.readouterr().out
    assert "converted 5 images, 10 captions" in out and "re-encoded 5" in out
    assert sorted(p.name for p in (tmp_path / "wds").iterdir()) == ["00000.tar", "00001.tar", "00002.tar"]
    pattern = str(tmp_path / "wds" / "{00000..00002}.tar")
    assert main(["data", "convert", pattern, str(tmp_path / "k"), "--from", "wds", "--to", "karpathy"]) == 0
    records = read_records("karpathy", tmp_path / "k" / "dataset_coco.json")
    assert [r.path.name for r in records] == [f"{i}.jpg" for i in range(5)]
    assert records[3].captions == ("caption number 3", "second for 3")
    # re-encoded at quality 95: close to the PNG source, not equal
    diff = np.abs(np.asarray(Image.open(records[0].path), dtype=int) - np.asarray(Image.open(tmp_path / "src" / "0.png"), dtype=int))
    assert diff.mean() < 3


def test_inspect_counts_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _png(tmp_path, "a.png", (40, 30))
    _png(tmp_path, "b.png", (300, 200), seed=1)
    (tmp_path / "copy_of_a.png").write_bytes((tmp_path / "a.png").read_bytes())
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    lines = [
        {"image": "a.png", "captions": ["a photo of noise", "a photo of noise", ""]},
        {"image": "b.png", "caption": "one two three four five six"},
        {"image": "copy_of_a.png", "caption": "the same bytes"},
        {"image": "broken.jpg", "caption": "cannot be read", "split": "test"},
        {"image": "gone.png", "caption": "missing"},
        {"image": "https://x.org/y.jpg", "caption": "remote"},
    ]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    report = inspect_dataset("jsonl", tmp_path / "d.jsonl")
    assert (report.images, report.captions) == (4, 5)
    assert report.splits == {"train": (3, 4), "test": (1, 1)}
    assert report.problems == {
        "unreadable images": 1, "missing image files": 1, "URL images (not downloadable here)": 1, "empty captions": 1,
        "images without captions": 0, "image listed twice": 0, "byte-identical images": 1, "caption repeated for an image": 1,
    }
    assert report.caption_words == [4, 1, 0, 0, 0, 0, 0]  # 4, 4, 3, 3 words (incl. the unreadable image's); 6 words
    assert report.image_sides == [2, 0, 1, 0, 0, 0, 0]  # a and its copy: 30 px; b: 200 px
    assert main(["data", "inspect", str(tmp_path / "d.jsonl"), "--format", "jsonl"]) == 0
    out = capsys.readouterr().out
    assert "broken.jpg" in out and "byte-identical images" in out and "total" in out


def test_cli_errors_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "d.csv").write_text("path,text\nx.png,hello\n")
    assert main(["data", "inspect", str(tmp_path / "d.csv"), "--format", "csv"]) == 2
    assert "no column 'filepath'" in capsys.readouterr().err
    assert main(["data", "convert", str(tmp_path / "none"), str(tmp_path / "o"), "--from", "wds", "--to", "jsonl"]) == 2
    assert "do not exist" in capsys.readouterr().err
