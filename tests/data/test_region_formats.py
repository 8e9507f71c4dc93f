"""Region features in BUTD TSV, per-image npz and vlp-regions-1: round trips, broken rows, box
normalisation, and `vlp data convert|inspect --kind regions`."""

from __future__ import annotations

import base64
import csv
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from vlp.cli.main import main
from vlp.data.formats.region_files import RegionItem, RegionOptions, RegionReadStats, read_regions, write_regions
from vlp.data.records import DataFormatError, DataWarning
from vlp.data.regions import RegionFeatureReader

DIM = 12


def _items(seed: int = 0, counts=(5, 0, 3, 36)) -> list[RegionItem]:
    """Random float32 features (not float16-representable: float32 exactness is what is checked),
    pixel boxes inside the image, one image with no regions, ids in no particular order."""
    rng = np.random.default_rng(seed)
    out = []
    for k, r in enumerate(counts):
        w, h = int(rng.integers(50, 600)), int(rng.integers(50, 600))
        xy = rng.random((r, 2)) * [w / 2, h / 2]
        wh = rng.random((r, 2)) * [w / 2, h / 2] + 1
        boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
        features = rng.standard_normal((r, DIM)).astype(np.float32) if r else np.zeros((0, 0), np.float32)
        out.append(RegionItem([42, 7, 100003, 5][k], features, boxes, (w, h), normalised_boxes=False))
    return out


def _same(a: list[RegionItem], b: list[RegionItem]) -> None:
    assert [i.image_id for i in a] == [i.image_id for i in b]
    for x, y in zip(a, b):
        assert x.image_size == y.image_size and x.normalised_boxes == y.normalised_boxes
        assert x.boxes.dtype == y.boxes.dtype == np.float32 and np.array_equal(x.boxes, y.boxes)
        assert len(x.features) == len(y.features)
        if len(x.features):
            assert y.features.dtype == np.float32 and np.array_equal(x.features, y.features)  # bit for bit


def _read(fmt: str, path: Path, **options) -> list[RegionItem]:
    return list(read_regions(fmt, path, RegionOptions(**options)))


def test_tsv_to_vlp_to_tsv_is_exact(tmp_path: Path) -> None:
    items = _items()
    write_regions("tsv", items, tmp_path / "a.tsv")
    from_tsv = _read("tsv", tmp_path / "a.tsv")
    _same(items, from_tsv)
    write_regions("vlp", from_tsv, tmp_path / "r.safetensors")
    reader = RegionFeatureReader(tmp_path / "r.safetensors")
    assert reader.normalised_boxes is False and reader.feature_dim == DIM and reader.image_size(42) == items[0].image_size
    assert reader[7][0].shape == (0, DIM)  # the image without regions keeps its place
    write_regions("tsv", _read("vlp", tmp_path / "r.safetensors"), tmp_path / "b.tsv")
    assert (tmp_path / "b.tsv").read_bytes() == (tmp_path / "a.tsv").read_bytes()


def test_npz_to_vlp_to_npz_is_exact(tmp_path: Path) -> None:
    items = _items(1)
    write_regions("npz", items, tmp_path / "npz")
    assert sorted(p.name for p in (tmp_path / "npz").iterdir()) == ["100003.npz", "42.npz", "5.npz", "7.npz"]
    with np.load(tmp_path / "npz" / "42.npz", allow_pickle=False) as f:  # the py-bottom-up-attention keys
        assert sorted(f.files) == ["bbox", "image_h", "image_w", "num_bbox", "x"] and int(f["num_bbox"]) == 5
    from_npz = _read("npz", tmp_path / "npz")
    by_id = sorted(items, key=lambda i: i.image_id)  # a folder has no order: files are read by image id
    _same(by_id, from_npz)
    written = write_regions("vlp", from_npz, tmp_path / "shards", RegionOptions(images_per_shard=3))
    assert [p.name for p in written] == ["regions-00000.safetensors", "regions-00001.safetensors"]
    write_regions("npz", _read("vlp", tmp_path / "shards"), tmp_path / "npz2")
    _same(by_id, _read("npz", tmp_path / "npz2"))


def test_npz_alternative_keys_and_no_pickles(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    folder = tmp_path / "feats"
    folder.mkdir()
    f16 = rng.standard_normal((4, DIM)).astype(np.float16)
    np.savez(folder / "COCO_val2014_000000000042.npz", features=f16, boxes=np.ones((4, 4), np.float32))  # no size
    np.savez(folder / "9.npz", x=np.zeros((2, DIM), np.float32), bbox=np.ones((2, 4)), num_bbox=3)  # count disagrees
    np.savez(folder / "10.npz", x=np.array([{"evil": 1}], dtype=object), bbox=np.ones((1, 4)))  # needs unpickling
    (folder / "11.npz").write_bytes(b"PK\x03\x04 truncated")
    np.savez(folder / "50.npz", x=np.zeros((1, DIM + 1), np.float32), bbox=np.ones((1, 4)))  # other width than 42's
    stats = RegionReadStats()
    with pytest.warns(DataWarning, match="4 malformed region rows") as caught:
        got = list(read_regions("npz", folder, stats=stats))
    message = str(caught[0].message)
    assert "9.npz: num_bbox is 3 but the arrays hold 2 boxes" in message
    assert [i.image_id for i in got] == [42] and got[0].image_size is None
    assert np.array_equal(got[0].features, f16.astype(np.float32))
    assert stats.images == 1 and stats.malformed == 4 and any("10.npz" in e and "pickle" in e.lower() for e in stats.examples)
    assert any("50.npz: feature dim 13 differs from 12" in e for e in stats.examples)


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.asarray(a, dtype="<f4").tobytes()).decode()


def _row(image_id, num, boxes, features, w=100, h=80) -> str:
    return "\t".join(map(str, [image_id, w, h, num, boxes, features])) + "\n"


def test_partly_broken_tsv_keeps_every_good_row(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    good = [(i, rng.random((3, 4)).astype(np.float32) * 50, rng.standard_normal((3, DIM)).astype(np.float32)) for i in range(5)]
    rows = [_row(i, 3, _b64(b), _b64(f)) for i, b, f in good]
    bad = [
        _row(90, 3, _b64(good[0][1])[:-8], _b64(good[0][2])),  # base64 cut short: wrong length
        _row(91, 4, _b64(good[0][1]), _b64(good[0][2])),  # num_boxes disagrees with the arrays
        _row(92, 3, _b64(good[0][1]), _b64(np.zeros((3, DIM + 2)))),  # feature dim differs from row 1
        _row(93, 3, "not*base64!", _b64(good[0][2])),
        "94\t100\t80\t3\n",  # columns missing
        _row(2, 3, _b64(good[0][1]), _b64(good[0][2])),  # id already read
    ]
    text = rows[:2] + bad[:3] + rows[2:4] + bad[3:] + rows[4:]
    (tmp_path / "f.tsv").write_text("".join(text))
    stats = RegionReadStats()
    with pytest.warns(DataWarning) as caught:
        got = list(read_regions("tsv", tmp_path / "f.tsv", stats=stats))
    assert [i.image_id for i in got] == [0, 1, 2, 3, 4]
    for item, (_, b, f) in zip(got, good):
        assert np.array_equal(item.boxes, b) and np.array_equal(item.features, f)
    assert stats.malformed == 6 and stats.images == 5 and stats.regions == 15
    message = str(caught[0].message)
    assert message.startswith(f"6 malformed region rows skipped while reading {tmp_path / 'f.tsv'}")
    assert f"{tmp_path / 'f.tsv'}: row 3: boxes: " in message  # names the file and the row
    assert "row 4: boxes: base64 holds 12 floats, num_boxes 4 needs 16" in stats.examples[1]
    assert "row 5: feature dim 14 differs from 12 (set by" in stats.examples[2]
    assert "row 8: boxes: invalid base64" in stats.examples[3] and "row 9: 4 columns, expected 6" in stats.examples[4]
    assert "row 10: duplicate image id 2" in stats.examples[5]


def test_lxmert_columns_header_string_ids_and_long_rows(tmp_path: Path) -> None:
    """LXMERT's column order, COCO-style string ids, Python-3 ``b'...'`` base64, rows far past the
    csv module's 128 kB default field limit (36 x 2048 float32 is ~390 kB of base64)."""
    rng = np.random.default_rng(4)
    features = rng.standard_normal((36, 2048)).astype(np.float32)
    boxes = rng.random((36, 4)).astype(np.float32) * 100
    lxmert = "img_id,img_h,img_w,objects_id,objects_conf,attrs_id,attrs_conf,num_boxes,boxes,features".split(",")
    cells = ["COCO_val2014_000000000042", "80", "100", "AAAA", "AAAA", "AAAA", "AAAA", "36", f"b'{_b64(boxes)}'", _b64(features)]
    (tmp_path / "lx.tsv").write_text("\t".join(cells) + "\n")
    limit = csv.field_size_limit()
    [item] = _read("tsv", tmp_path / "lx.tsv", tsv_fields=tuple(lxmert))
    assert csv.field_size_limit() == limit  # restored after reading
    assert item.image_id == 42 and item.image_size == (100, 80)
    assert np.array_equal(item.features, features) and np.array_equal(item.boxes, boxes)
    (tmp_path / "hdr.tsv").write_text("\t".join(lxmert) + "\n" + "\t".join(cells) + "\n")
    assert _read("tsv", tmp_path / "hdr.tsv")[0].image_id == 42  # the header names the columns
    with pytest.raises(DataFormatError, match="lack \\['features'\\]"):
        _read("tsv", tmp_path / "lx.tsv", tsv_fields=("image_id", "num_boxes", "boxes"))


def test_box_normalisation_by_image_size(tmp_path: Path) -> None:
    items = _items(5)
    write_regions("tsv", items, tmp_path / "a.tsv")
    normalised = _read("tsv", tmp_path / "a.tsv", boxes="normalised")
    for n, item in zip(normalised, items):
        w, h = item.image_size
        assert n.normalised_boxes and np.array_equal(n.boxes, item.boxes / np.float32([w, h, w, h]))
    write_regions("vlp", normalised, tmp_path / "n.safetensors")
    assert RegionFeatureReader(tmp_path / "n.safetensors").normalised_boxes is True
    # TSV stores pixels: writing normalised boxes multiplies back (exact up to float32 rounding)
    write_regions("tsv", _read("vlp", tmp_path / "n.safetensors"), tmp_path / "back.tsv")
    for a, b in zip(items, _read("tsv", tmp_path / "back.tsv")):
        np.testing.assert_allclose(b.boxes, a.boxes, rtol=1e-6)
    # no image size, no conversion: the error names the image, and the other images are kept
    sizeless = tmp_path / "sizeless"
    sizeless.mkdir()
    np.savez(sizeless / "3.npz", x=np.zeros((1, DIM), np.float32), bbox=np.ones((1, 4), np.float32))
    np.savez(sizeless / "4.npz", x=np.zeros((1, DIM), np.float32), bbox=np.ones((1, 4), np.float32), image_w=10, image_h=10)
    with pytest.warns(DataWarning, match="image 3 has no image size"):
        assert [i.image_id for i in _read("npz", sizeless, boxes="normalised")] == [4]
    with pytest.raises(ValueError, match="image 3: unknown image size"):
        write_regions("tsv", _read("npz", sizeless), tmp_path / "x.tsv")


def test_vlp_regions_without_sizes_stay_readable(tmp_path: Path) -> None:
    """Shards written before ``image_sizes`` existed (or without sizes) read as before."""
    from vlp.data.regions import write_region_features

    path = write_region_features(tmp_path / "old.safetensors", [(1, torch.ones(2, 4), torch.full((2, 4), 0.5))])
    [item] = _read("vlp", path)
    assert item.image_size is None and item.normalised_boxes and item.features.shape == (2, 4)


def test_cli_convert_and_inspect_regions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    items = _items(6)
    write_regions("tsv", items, tmp_path / "a.tsv")
    with open(tmp_path / "a.tsv", "a") as f:
        f.write(_row(77, 2, _b64(np.ones((3, 4))), _b64(np.ones((2, DIM)))))  # one broken row
    args = ["data", "convert", str(tmp_path / "a.tsv"), str(tmp_path / "r.safetensors"), "--kind", "regions", "--from", "tsv", "--to", "vlp"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert f"converted 4 images, 44 regions (feature dim {DIM})" in captured.out and "malformed rows 1" in captured.out
    assert "row 5: boxes: base64 holds 12 floats, num_boxes 2 needs 8" in captured.err
    assert main(["data", "convert", str(tmp_path / "r.safetensors"), str(tmp_path / "npz"), "--kind", "regions",
                 "--from", "vlp", "--to", "npz"]) == 0
    _same(sorted(items, key=lambda i: i.image_id), _read("npz", tmp_path / "npz"))
    capsys.readouterr()
    assert main(["data", "inspect", str(tmp_path / "a.tsv"), "--kind", "regions"]) == 0
    out = capsys.readouterr().out
    assert "images            4" in out and "feature dim       12" in out and "boxes             pixels" in out
    assert "regions           44  (mean 11.0, min 0, max 36 per image)" in out
    assert "malformed rows (skipped)" in out and "row 5" in out
    hist = {line.split()[0]: int(line.split()[2]) for line in out.splitlines() if "%" in line and line.split()[1:2] == ["boxes"]}
    assert hist == {"0": 1, "1-9": 2, "10-19": 0, "20-35": 0, "36": 1, "37-49": 0, "50-99": 0, "100+": 0}
    assert main(["data", "convert", str(tmp_path / "a.tsv"), str(tmp_path / "o"), "--kind", "regions", "--from", "tsv", "--to", "wds"]) == 2
    assert "--to 'wds' is not a regions format; --kind regions knows: tsv, npz, vlp" in capsys.readouterr().err


def test_read_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="no such TSV file"):
        _read("tsv", tmp_path / "missing.tsv")
    with pytest.raises(DataFormatError, match="not readable as vlp-regions-1"):
        (tmp_path / "x.safetensors").write_bytes(b"garbage")
        _read("vlp", tmp_path / "x.safetensors")
    with pytest.raises(ValueError, match="unknown region format 'lmdb'"):
        _read("lmdb", tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an empty TSV is not an error, just empty
        (tmp_path / "empty.tsv").write_text("")
        assert _read("tsv", tmp_path / "empty.tsv") == []
