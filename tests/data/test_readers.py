"""Readers on the real COCO sample and on small synthetic files written into tmp_path."""

from __future__ import annotations

import json
import warnings
from collections import Counter
from pathlib import Path

import pytest

from vlp.data.readers import read_coco_captions, read_karpathy
from vlp.data.records import DataFormatError, DataWarning, ImageRecord, ReadStats

COCO = Path("/work/shared/data/coco-sample")
needs_coco = pytest.mark.skipif(not (COCO / "dataset_coco.json").is_file(), reason="no COCO sample")


# ---------------------------------------------------------------- real data


@needs_coco
def test_karpathy_real_sample():
    stats = ReadStats()
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # the sample is clean: no warning at all
        records = read_karpathy(COCO / "dataset_coco.json", stats=stats)
    assert len(records) == 101
    assert sum(len(r.captions) for r in records) == 505
    assert Counter(r.split for r in records) == {"train": 79, "val": 5, "test": 17}
    assert stats == ReadStats(images=101, captions=505)
    assert len({r.image_id for r in records}) == 101
    first = records[0]
    assert first.image_id == 0 and first.split == "val"
    assert first.path == COCO / "images" / "000000000285.jpg"
    assert first.path.is_absolute() and first.path.is_file()
    assert first.captions[0] == "A big burly grizzly bear is show with grass in the background."
    assert all(isinstance(c, str) and c == c.strip() and c for r in records for c in r.captions)


@needs_coco
def test_karpathy_split_filter():
    test = read_karpathy(COCO / "dataset_coco.json", splits={"test"})
    assert len(test) == 17 and {r.split for r in test} == {"test"}
    assert len(read_karpathy(COCO / "dataset_coco.json", splits="val")) == 5  # one name, not letters
    assert len(read_karpathy(COCO / "dataset_coco.json", splits=["train", "val"])) == 84


@needs_coco
def test_coco_captions_real_sample_matches_karpathy():
    stats = ReadStats()
    coco = read_coco_captions(COCO / "captions.json", COCO / "images", split="val", stats=stats)
    assert (stats.images, stats.captions) == (101, 505)
    assert {r.split for r in coco} == {"val"}
    karpathy_raw = json.loads((COCO / "dataset_coco.json").read_text())["images"]
    by_cocoid = {e["cocoid"]: tuple(" ".join(s["raw"].split()) for s in e["sentences"]) for e in karpathy_raw}
    for r in coco:
        assert r.captions == by_cocoid[r.image_id]
        assert r.path.is_file()


# ---------------------------------------------------------------- synthetic files


def _image(root: Path, name: str) -> str:
    (root / "imgs").mkdir(exist_ok=True)
    (root / "imgs" / name).write_bytes(b"not decoded at read time")
    return name


def _karpathy_entry(imgid: int, filename: str, split: str = "train", raws=("a cat",)) -> dict:
    return {
        "filepath": "imgs",
        "filename": filename,
        "imgid": imgid,
        "split": split,
        "sentences": [{"raw": r, "tokens": r.split()} for r in raws],
    }


def _write(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_karpathy_restval_image_root_and_no_filepath(tmp_path):
    entries = [
        _karpathy_entry(7, _image(tmp_path, "a.jpg"), "restval"),
        _karpathy_entry(8, _image(tmp_path, "b.jpg"), "test"),
    ]
    path = _write(tmp_path / "k.json", {"images": entries})
    records = read_karpathy(path)
    assert [r.split for r in records] == ["train", "test"]
    assert records[0] == ImageRecord(7, tmp_path / "imgs" / "a.jpg", "train", ("a cat",))
    assert [r.image_id for r in read_karpathy(path, splits=["restval"])] == [7]

    # Flickr-style files have no "filepath"; image_root is then the image directory itself.
    del entries[0]["filepath"]
    path = _write(tmp_path / "flickr.json", {"images": entries[:1]})
    assert read_karpathy(path, image_root=tmp_path / "imgs")[0].path == tmp_path / "imgs" / "a.jpg"


def test_karpathy_missing_images_warn_once_with_count(tmp_path):
    entries = [_karpathy_entry(i, f"{i}.jpg") for i in range(5)]
    for i in (0, 2):
        _image(tmp_path, f"{i}.jpg")
    path = _write(tmp_path / "k.json", {"images": entries})
    stats = ReadStats()
    with pytest.warns(DataWarning) as caught:
        records = read_karpathy(path, stats=stats)
    assert [r.image_id for r in records] == [0, 2]
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "3 of 5 images" in message and str(path) in message and str(tmp_path) in message
    assert stats == ReadStats(images=2, captions=2, missing_images=3)
    assert caught[0].filename == __file__  # points at the caller, not at readers.py


def test_karpathy_empty_captions_dropped_and_counted(tmp_path):
    entries = [
        _karpathy_entry(0, _image(tmp_path, "0.jpg"), raws=("  a dog  ", "", "   \n")),
        _karpathy_entry(1, _image(tmp_path, "1.jpg"), raws=(" ", "")),  # nothing left
        _karpathy_entry(2, _image(tmp_path, "2.jpg"), raws=()),  # nothing at all
        _karpathy_entry(3, _image(tmp_path, "3.jpg"), raws=("ok",)),
    ]
    path = _write(tmp_path / "k.json", {"images": entries})
    stats = ReadStats()
    with pytest.warns(DataWarning, match=r"4 empty caption\(s\).*2 image\(s\) left without") as caught:
        records = read_karpathy(path, stats=stats)
    assert len(caught) == 1
    assert [(r.image_id, r.captions) for r in records] == [(0, ("a dog",)), (3, ("ok",))]
    assert stats == ReadStats(images=2, captions=2, empty_captions=4, images_without_captions=2)


def test_stats_only_count_requested_splits(tmp_path):
    entries = [_karpathy_entry(0, "gone.jpg", "val"), _karpathy_entry(1, _image(tmp_path, "1.jpg"))]
    path = _write(tmp_path / "k.json", {"images": entries})
    stats = ReadStats(missing_images=99)  # overwritten, not accumulated
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        assert len(read_karpathy(path, splits=["train"], stats=stats)) == 1
    assert stats == ReadStats(images=1, captions=1)


@pytest.mark.parametrize(
    "data, where",
    [
        ([1, 2], "top level: expected an object"),
        ({"dataset": "coco"}, "top level: missing key 'images'"),
        ({"images": {"a": 1}}, ": images: expected list, got dict"),
        ({"images": ["x"]}, "images[0]: expected an object"),
        ({"images": [{"imgid": 0, "split": "train", "sentences": []}]}, "images[0]: missing key 'filename'"),
        ({"images": [{"filename": "a", "imgid": "0", "split": "train", "sentences": []}]}, "images[0].imgid: expected int, got str"),
        ({"images": [{"filename": "a", "imgid": True, "split": "train", "sentences": []}]}, "images[0].imgid: expected int, got bool"),
        ({"images": [{"filename": "a", "imgid": 0, "sentences": []}]}, "images[0]: missing key 'split'"),
        ({"images": [{"filename": "a", "imgid": 0, "split": "train", "sentences": "a cat"}]}, "images[0].sentences: expected list"),
        ({"images": [{"filename": "a", "imgid": 0, "split": "train", "sentences": [{"tokens": []}]}]}, "images[0].sentences[0]: missing key 'raw'"),
        ({"images": [{"filename": "a", "imgid": 0, "split": "train", "sentences": [{"raw": 3}]}]}, "images[0].sentences[0].raw: expected str, got int"),
        ({"images": [_karpathy_entry(4, "a"), _karpathy_entry(4, "b")]}, "images[1].imgid: duplicate id 4 (also images[0].imgid)"),
    ],
)
def test_karpathy_malformed(tmp_path, data, where):
    path = _write(tmp_path / "bad.json", data)
    with pytest.raises(DataFormatError) as info:
        read_karpathy(path)
    assert str(path) in str(info.value)
    assert where in str(info.value)


def test_invalid_json_is_chained(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"images": [')
    for read in (lambda: read_karpathy(path), lambda: read_coco_captions(path, tmp_path)):
        with pytest.raises(DataFormatError, match="invalid JSON") as info:
            read()
        assert isinstance(info.value.__cause__, json.JSONDecodeError)
        assert str(path) in str(info.value)


def _coco(images, annotations) -> dict:
    return {"images": images, "annotations": annotations}


def test_coco_captions_synthetic(tmp_path):
    data = _coco(
        [
            {"id": 42, "file_name": _image(tmp_path, "42.jpg")},
            {"id": 5, "file_name": "missing.jpg"},
            {"id": 9, "file_name": _image(tmp_path, "9.jpg")},  # no annotations at all
            {"id": 3, "file_name": _image(tmp_path, "3.jpg")},
        ],
        [
            {"id": 0, "image_id": 3, "caption": "three"},
            {"id": 1, "image_id": 42, "caption": "first "},
            {"id": 2, "image_id": 42, "caption": " "},
            {"id": 3, "image_id": 42, "caption": "second"},
            {"id": 4, "image_id": 5, "caption": "lost"},
        ],
    )
    path = _write(tmp_path / "c.json", data)
    stats = ReadStats()
    with pytest.warns(DataWarning) as caught:
        records = read_coco_captions(path, tmp_path / "imgs", split="test", stats=stats)
    assert len(caught) == 2
    assert "1 of 4 images" in str(caught[0].message)
    assert [(r.image_id, r.captions, r.split) for r in records] == [
        (42, ("first", "second"), "test"),
        (3, ("three",), "test"),
    ]
    assert stats == ReadStats(images=2, captions=3, missing_images=1, empty_captions=1, images_without_captions=1)


@pytest.mark.parametrize(
    "data, where",
    [
        ({"images": []}, "top level: missing key 'annotations'"),
        (_coco([{"file_name": "a"}], []), "images[0]: missing key 'id'"),
        (_coco([{"id": 1, "file_name": 2}], []), "images[0].file_name: expected str, got int"),
        (_coco([{"id": 1, "file_name": "a"}, {"id": 1, "file_name": "b"}], []), "images[1].id: duplicate id 1"),
        (_coco([{"id": 1, "file_name": "a"}], [{"image_id": 1}]), "annotations[0]: missing key 'caption'"),
        (_coco([{"id": 1, "file_name": "a"}], [{"image_id": 1, "caption": None}]), "annotations[0].caption: expected str, got NoneType"),
        (_coco([{"id": 1, "file_name": "a"}], [{"image_id": 1, "caption": "x"}, {"image_id": 2, "caption": "y"}]), "annotations[1].image_id: 2 is not the id"),
    ],
)
def test_coco_malformed(tmp_path, data, where):
    path = _write(tmp_path / "bad.json", data)
    with pytest.raises(DataFormatError) as info:
        read_coco_captions(path, tmp_path)
    assert str(path) in str(info.value) and where in str(info.value)


def test_captions_nfc_and_whitespace_collapsed(tmp_path):
    from vlp.data.readers import normalise_caption

    assert normalise_caption(" cafe\u0301\tau  lait\n ") == "caf\u00e9 au lait"
    _image(tmp_path, "a.jpg")
    data = {"images": [_karpathy_entry(0, "a.jpg", raws=("two  spaces\tand tab", "e\u0301"))]}
    (tmp_path / "d.json").write_text(json.dumps(data))
    (record,) = read_karpathy(tmp_path / "d.json")
    assert record.captions == ("two spaces and tab", "\u00e9")
