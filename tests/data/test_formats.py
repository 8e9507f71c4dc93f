"""Every dataset format: readers on real and synthetic files, writers, and A -> B -> A round trips."""

from __future__ import annotations

import io
import json
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlp.data.formats import FORMATS, FormatOptions, read_records, read_samples, write_samples
from vlp.data.formats.tabular import read_csv
from vlp.data.formats.wds import ShardIndex, expand_shards, read_wds
from vlp.data.readers import read_karpathy
from vlp.data.records import DataFormatError, DataWarning, ReadStats


def _png(seed: int, size=(8, 6)) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _jpg(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(_png(seed, (16, 12)))).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


SOURCE = [  # name, split, captions (already normalised)
    ("images/a.jpg", "train", ("a red square", "caf\u00e9 on the left")),
    ("images/b.png", "train", ("two dogs",)),
    ("images/sub/c.png", "test", ("a cat", "a small cat", "\u00fcber cat")),
    ("images/d.jpg", "val", ("one line",)),
]


@pytest.fixture
def karpathy_src(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    entries = []
    for i, (name, split, captions) in enumerate(SOURCE):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_jpg(i) if name.endswith(".jpg") else _png(i))
        folder, _, filename = name.rpartition("/")
        entries.append({"filepath": folder, "filename": filename, "imgid": 10 + i, "split": split,
                        "sentences": [{"raw": c} for c in captions]})
    (root / "dataset_coco.json").write_text(json.dumps({"images": entries}))
    return root / "dataset_coco.json"


def _content(fmt: str, path: Path, options: FormatOptions) -> dict[str, tuple[str, tuple[str, ...], bytes]]:
    samples = list(read_samples(fmt, path, options))
    return {s.name: (s.split, s.captions, s.read_bytes()) for s in samples}


def _dst(fmt: str, tmp: Path) -> Path:
    return tmp / {"csv": "out/data.csv", "tsv": "out/data.tsv", "jsonl": "out/data.jsonl"}.get(fmt, "out")


def _readable(fmt: str, written: list[Path], dst: Path) -> list[Path]:
    return written if fmt == "coco" else [dst if fmt != "karpathy" else written[0]]


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f != "karpathy"])
def test_round_trip_through_every_format(karpathy_src: Path, tmp_path: Path, fmt: str) -> None:
    """karpathy -> fmt -> karpathy keeps every image byte for byte, its name, split and captions."""
    original = _content("karpathy", karpathy_src, FormatOptions())
    options = FormatOptions(split_dirs=True, samples_per_shard=3)
    dst = _dst(fmt, tmp_path)
    written = write_samples(fmt, read_samples("karpathy", karpathy_src), dst, options)
    middle: dict = {}
    for part in _readable(fmt, written, dst):
        split = part.stem.removeprefix("captions_") if fmt == "coco" else "train"
        source = part if fmt != "wds" else dst
        middle.update(_content(fmt, source, FormatOptions(split=split, split_dirs=True)))
        if fmt == "wds":
            break
    if fmt == "folder":  # the folder writer puts images under their split's directory
        middle = {n.split("/", 1)[1]: v for n, v in middle.items()}
    assert middle == original
    back = tmp_path / "back"
    samples = []
    for part in _readable(fmt, written, dst):
        split = part.stem.removeprefix("captions_") if fmt == "coco" else "train"
        samples += list(read_samples(fmt, part if fmt != "wds" else dst, FormatOptions(split=split, split_dirs=True)))
        if fmt == "wds":
            break
    if fmt == "folder":
        from dataclasses import replace

        samples = [replace(s, name=s.name.split("/", 1)[1]) for s in samples]
    write_samples("karpathy", samples, back)
    assert _content("karpathy", back / "dataset_coco.json", FormatOptions()) == original
    if fmt not in ("folder",):  # every format but bare folders stores image ids
        ids = {r.path.name: r.image_id for r in read_karpathy(back / "dataset_coco.json")}
        assert ids == {"a.jpg": 10, "b.png": 11, "c.png": 12, "d.jpg": 13}


def test_wds_shard_layout_and_webdataset_reads_it(karpathy_src: Path, tmp_path: Path) -> None:
    import webdataset as wds

    shards = write_samples("wds", read_samples("karpathy", karpathy_src), tmp_path / "shards", FormatOptions(samples_per_shard=3))
    assert [p.name for p in shards] == ["00000.tar", "00001.tar"]
    with tarfile.open(shards[0]) as tar:
        assert tar.getnames()[:3] == ["000000000.jpg", "000000000.json", "000000000.txt"]
    got = list(wds.WebDataset([str(p) for p in shards], shardshuffle=False).decode("pil"))
    assert [s["__key__"] for s in got] == ["000000000", "000000001", "000000002", "000010000"]
    assert got[2]["txt"] == "a cat\na small cat\n\u00fcber cat" and got[2]["json"]["image_id"] == 12
    assert got[1]["png"].size == (8, 6) and np.asarray(got[1]["png"]).shape == (6, 8, 3)
    assert expand_shards(str(tmp_path / "shards" / "{00000..00001}.tar")) == shards
    assert expand_shards(tmp_path / "shards") == shards


def test_read_img2dataset_style_shards(tmp_path: Path) -> None:
    """Shards written by webdataset's TarWriter with only .jpg + .txt (no json), plus a key
    without an image, an empty caption and a corrupt-but-present image (read: not decoded here)."""
    import webdataset as wds

    for shard in range(2):
        with wds.TarWriter(str(tmp_path / f"{shard:05d}.tar")) as w:
            for i in range(3):
                w.write({"__key__": f"{shard:05d}{i:04d}", "jpg": _jpg(i), "txt": f" caption  {shard}-{i} "})
            w.write({"__key__": f"{shard:05d}9998", "txt": "no image"})
            w.write({"__key__": f"{shard:05d}9999", "jpg": b"garbage", "txt": "  "})
    stats = ReadStats()
    samples = list(read_wds(str(tmp_path / "{00000..00001}.tar"), stats=stats))
    assert [s.captions for s in samples] == [(f"caption {s}-{i}",) for s in range(2) for i in range(3)]
    assert [s.name for s in samples][:2] == ["000000000.jpg", "000000001.jpg"]
    assert samples[0].read_bytes() == _jpg(0)
    assert stats == ReadStats(images=6, captions=6, missing_images=2, empty_captions=2, images_without_captions=2)
    index = ShardIndex.build(expand_shards(tmp_path))
    assert len(index) == 8 and index.shard_counts.tolist() == [4, 4] and index.no_image == 2
    with pytest.raises(FileNotFoundError, match=r"1 of 3 shards .* do not exist: .*00002\.tar"):
        expand_shards(str(tmp_path / "{00000..00002}.tar"))


# ---------------------------------------------------------------- CSV / TSV


def _write_images(root: Path, *names: str) -> None:
    for i, name in enumerate(names):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(_png(i))


def test_csv_open_clip_layout_grouped_and_counted(tmp_path: Path) -> None:
    _write_images(tmp_path, "img/x.png", "img/y.png")
    (tmp_path / "train.csv").write_text(
        "filepath,title\n"
        "img/x.png,first caption\n"
        'img/y.png,"a, quoted caption"\n'
        "img/x.png,second   caption\n"
        "img/x.png,   \n"  # empty caption: counted
        "img/missing.png,lost\n"  # missing file: counted
        "https://example.com/z.jpg,a remote image\n"  # URL: counted, never fetched
    )
    stats = ReadStats()
    with pytest.warns(DataWarning) as caught:
        records = read_csv(tmp_path / "train.csv", stats=stats)
    messages = " | ".join(str(w.message) for w in caught)
    assert "1 image(s)" in messages and "URLs" in messages and "not download" in messages
    assert [(r.path.name, r.captions, r.split, r.image_id) for r in records] == [
        ("x.png", ("first caption", "second caption"), "train", 0),
        ("y.png", ("a, quoted caption",), "train", 1),
    ]
    assert stats == ReadStats(images=2, captions=3, missing_images=1, empty_captions=1, url_images=1)


def test_tsv_custom_keys_split_column_and_errors(tmp_path: Path) -> None:
    _write_images(tmp_path, "a.png", "b.png")
    (tmp_path / "d.tsv").write_text("path\tcap\tsplit\na.png\tone\ttrain\nb.png\ttwo\ttest\n")
    options = FormatOptions(csv_image_key="path", csv_caption_key="cap")
    records = read_records("tsv", tmp_path / "d.tsv", options)
    assert [(r.path.name, r.split) for r in records] == [("a.png", "train"), ("b.png", "test")]
    assert [r.path.name for r in read_records("tsv", tmp_path / "d.tsv", options, splits=["test"])] == ["b.png"]
    with pytest.raises(DataFormatError, match=r"no column 'filepath' \(columns: \['path', 'cap', 'split'\]\)"):
        read_records("tsv", tmp_path / "d.tsv")
    with pytest.raises(DataFormatError, match="no column 'path'"):  # wrong separator: one big column
        read_records("csv", tmp_path / "d.tsv", options)
    (tmp_path / "leak.tsv").write_text("path\tcap\tsplit\na.png\tone\ttrain\na.png\ttwo\ttest\n")
    with pytest.raises(DataFormatError, match=r"line 3: image 'a.png' is in split 'test' but line 2 puts it in 'train'"):
        read_records("tsv", tmp_path / "leak.tsv", options)


# ---------------------------------------------------------------- JSONL / JSON lists / folders


def test_jsonl_caption_keys_and_errors(tmp_path: Path) -> None:
    _write_images(tmp_path, "a.png", "b.png", "c.png")
    lines = [
        {"image": "a.png", "caption": "plain"},
        {"image": "b.png", "captions": ["one", "two"]},
        {"image": "c.png", "text": "laion style"},
        {"image": "a.png", "caption": ["more"]},
    ]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    records = read_records("jsonl", tmp_path / "d.jsonl")
    assert [r.captions for r in records] == [("plain", "more"), ("one", "two"), ("laion style",)]
    (tmp_path / "bad.jsonl").write_text('{"image": "a.png", "caption": "x"}\n{"image": "a.png", "title": "x"}\n')
    with pytest.raises(DataFormatError, match=r"bad.jsonl: line 2: no caption: expected one of \['caption', 'captions', 'text'\]"):
        read_records("jsonl", tmp_path / "bad.jsonl")
    (tmp_path / "broken.jsonl").write_text('{"image": "a.png", "caption": "x"}\n{"image": \n')
    with pytest.raises(DataFormatError, match="line 2: invalid JSON"):
        read_records("jsonl", tmp_path / "broken.jsonl")


def test_folder_sidecars(tmp_path: Path) -> None:
    _write_images(tmp_path, "train/a.png", "train/deep/b.png", "test/c.png", "train/no_caption.png")
    (tmp_path / "train/a.png").with_suffix(".txt").write_text("first\n\n  second  \n")
    (tmp_path / "train/deep/b.txt").write_text("bee\n")
    (tmp_path / "test/c.txt").write_text("sea\n")
    stats = ReadStats()
    with pytest.warns(DataWarning, match="1 empty caption"):
        records = read_records("folder", tmp_path, FormatOptions(split_dirs=True), stats=stats)
    assert [(r.path.relative_to(tmp_path).as_posix(), r.split, r.captions) for r in records] == [
        ("test/c.png", "test", ("sea",)),
        ("train/a.png", "train", ("first", "second")),
        ("train/deep/b.png", "train", ("bee",)),
    ]
    assert stats == ReadStats(images=3, captions=4, empty_captions=1, images_without_captions=1)
    with pytest.warns(DataWarning):
        assert {r.split for r in read_records("folder", tmp_path)} == {"train"}


# ---------------------------------------------------------------- real data


def test_real_coco_sample_to_wds_to_jsonl(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "coco-sample" / "dataset_coco.json"
    shards = write_samples("wds", read_samples("karpathy", src), tmp_path / "wds", FormatOptions(samples_per_shard=40))
    assert len(shards) == 3
    write_samples("jsonl", read_samples("wds", tmp_path / "wds"), tmp_path / "j" / "coco.jsonl")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        back = read_records("jsonl", tmp_path / "j" / "coco.jsonl")
        original = read_karpathy(src)
    assert len(back) == 101 and sum(len(r.captions) for r in back) == 505
    for a, b in zip(original, back):
        assert (a.image_id, a.split, a.captions) == (b.image_id, b.split, b.captions)
        assert a.path.read_bytes() == b.path.read_bytes()
    coco = read_records("coco", shared_data / "coco-sample" / "captions.json", FormatOptions(image_root=str(shared_data / "coco-sample" / "images")))
    assert len(coco) == 101


def test_real_vizwiz_jsonl_and_photo_descriptions(shared_data: Path) -> None:
    stats = ReadStats()
    vizwiz = read_records("jsonl", shared_data / "vizwiz-sample" / "captions.jsonl", stats=stats)
    assert (stats.images, stats.captions) == (50, 50) and all(r.path.is_file() for r in vizwiz)
    photos = read_records("jsonl", shared_data / "photos" / "descriptions.json")
    assert len(photos) == 8 and {r.path.name for r in photos} >= {"astronaut.png", "chelsea.png"}
    assert next(r for r in photos if r.path.name == "chelsea.png").captions == ("a facial photo of a tabby cat",)


def test_partly_broken_dataset_keeps_every_valid_sample(shared_data: Path, tmp_path: Path) -> None:
    """Real photos plus a missing file, a URL and empty captions: the valid ones all survive."""
    photos = shared_data / "photos"
    lines = [{"image": str(p), "caption": f"photo {p.stem}"} for p in sorted(photos.glob("*.png"))]
    lines += [{"image": "gone.jpg", "caption": "x"}, {"image": "http://h/x.jpg", "caption": "y"},
              {"image": str(photos / "china.jpg"), "captions": ["", " "]}]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    stats = ReadStats()
    with pytest.warns(DataWarning):
        records = read_records("jsonl", tmp_path / "d.jsonl", stats=stats)
    assert len(records) == len(list(photos.glob("*.png")))
    assert stats.missing_images == 1 and stats.url_images == 1 and stats.empty_captions == 2
    assert stats.images_without_captions == 1
