"""Region features of the scenes: extraction, object tags, datasets and collators (OSCAR tags, MLM)."""

from __future__ import annotations

import json
import pickle
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from vlp.data.batch import Batch
from vlp.data.masking import special_token_ids
from vlp.data.readers import read_karpathy
from vlp.data.records import DataWarning
from vlp.data.region_data import (
    RegionCaptionPairDataset,
    RegionImageBatch,
    RegionImageCollator,
    RegionImageDataset,
    RegionPairCollator,
    encode_with_tags,
    extract_scene_regions,
    object_tags,
)
from vlp.data.regions import RegionFeatureReader
from vlp.data.scenes import generate_scenes
from vlp.data.tokenizer import TextTokenizer
from vlp.encoders.image.cnn import ResNetTrunk
from vlp.encoders.image.region import RegionInputs

SPLITS = ("train", "test")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("scenes_regions")
    generate_scenes(out, seed=0, image_size=32, num_train=20, num_val=0, num_test=8, num_test_novel=0, workers=1)
    return out


@pytest.fixture(scope="module")
def features(scenes) -> Path:
    return extract_scene_regions(scenes, scenes / "regions.safetensors", SPLITS, batch_size=8)


@pytest.fixture(scope="module")
def records(scenes):
    return read_karpathy(scenes / "dataset_coco.json", splits=["train"])


@pytest.fixture(scope="module")
def tags(scenes) -> dict[int, str]:
    return object_tags(scenes / "objects_train.json")


@pytest.fixture(scope="module")
def tok(records, tags) -> TextTokenizer:
    return TextTokenizer.train_wordpiece([c for r in records for c in r.captions] + list(tags.values()), vocab_size=300)


def _objects(scenes: Path, split: str) -> dict:
    return json.loads((scenes / f"objects_{split}.json").read_text())


def test_extraction_file(scenes, features) -> None:
    reader = RegionFeatureReader(features)
    expected_ids = {img["id"] for s in SPLITS for img in _objects(scenes, s)["images"]}
    assert set(reader.image_ids) == expected_ids and len(expected_ids) == 28
    assert reader.feature_dim == ResNetTrunk("resnet18", 3).out_channels == 256 and reader.normalised_boxes
    data = _objects(scenes, "train")
    n_objects = {img["id"]: 0 for img in data["images"]}
    for ann in data["annotations"]:
        n_objects[ann["image_id"]] += 1
    for image_id, count in n_objects.items():
        feats, boxes = reader[image_id]
        assert feats.shape == (1 + count, 256) and torch.isfinite(feats.float()).all()
        assert boxes[0].tolist() == [0.0, 0.0, 1.0, 1.0]  # the whole image comes first
    ann = data["annotations"][0]
    x, y, w, h = ann["bbox"]
    size = data["images"][0]["width"]
    _, boxes = reader[ann["image_id"]]
    assert torch.allclose(boxes[1], torch.tensor([x, y, x + w, y + h]) / size, atol=1e-5)


@pytest.fixture(scope="module")
def test_split_features(scenes, tmp_path_factory) -> Path:
    """Test split only, another seed, at most 2 regions per image."""
    return extract_scene_regions(scenes, tmp_path_factory.mktemp("r") / "t.safetensors", "test", seed=1, max_regions=2)


def test_extraction_is_deterministic_and_seeded(scenes, features, test_split_features, tmp_path) -> None:
    again = extract_scene_regions(scenes, tmp_path / "again.safetensors", ["test"], seed=1, max_regions=2, batch_size=3)
    first, second = RegionFeatureReader(test_split_features), RegionFeatureReader(again)
    test_ids = [img["id"] for img in _objects(scenes, "test")["images"]]
    assert first.image_ids == second.image_ids == test_ids
    for image_id in test_ids:
        assert all(torch.equal(a, b) for a, b in zip(first[image_id], second[image_id]))
        assert len(first[image_id][0]) <= 2
    seed0 = RegionFeatureReader(features)[test_ids[0]]
    assert torch.equal(first[test_ids[0]][1], seed0[1][:2]) and not torch.equal(first[test_ids[0]][0], seed0[0][:2])


def test_extraction_images_without_boxes_and_unreadable(scenes, tmp_path) -> None:
    copy = tmp_path / "scenes"
    shutil.copytree(scenes / "images" / "test", copy / "images" / "test")
    data = _objects(scenes, "test")
    data["images"] = data["images"][:3]
    empty_id = data["images"][0]["id"]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != empty_id]
    (copy / "objects_test.json").write_text(json.dumps(data))
    broken = data["images"][1]
    (copy / "images" / "test" / broken["file_name"]).write_bytes(b"not a png")
    with pytest.warns(DataWarning, match="1 of 3 images could not be read"):
        reader = RegionFeatureReader(extract_scene_regions(copy, tmp_path / "r.safetensors", ["test"]))
    assert broken["id"] not in reader and len(reader) == 2
    feats, boxes = reader[empty_id]
    assert feats.shape == (1, 256) and boxes.tolist() == [[0.0, 0.0, 1.0, 1.0]]


def test_object_tags(scenes, tags) -> None:
    data = _objects(scenes, "train")
    assert set(tags) == {img["id"] for img in data["images"]}
    image_id = max(tags, key=lambda i: len(tags[i].split()))
    anns = sorted((a for a in data["annotations"] if a["image_id"] == image_id), key=lambda a: a["bbox"][0])
    assert tags[image_id] == " ".join(f"{a['attributes']['colour']} {a['attributes']['shape']}" for a in anns)
    with_size = object_tags(scenes / "objects_train.json", attributes=("size", "colour"))
    assert with_size[image_id].split()[:3] == [anns[0]["attributes"][k] for k in ("size", "colour", "shape")]


def test_datasets_and_missing_images(scenes, features, test_split_features, records, tags) -> None:
    train_only = RegionFeatureReader(features)
    test_records = read_karpathy(scenes / "dataset_coco.json", splits=["test"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = RegionCaptionPairDataset(records + test_records, RegionFeatureReader(test_split_features), tags=tags)
    messages = [str(w.message) for w in caught if w.category is DataWarning]
    assert len(messages) == 1 and messages[0].startswith("20 of 28 images") and ds.missing_images == 20
    assert ds.num_images == 8 and len(ds) == sum(len(r.captions) for r in test_records)
    assert ds[0]["tags"] == ""  # tags cover the train split only
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing missing: no warning
        ds = RegionCaptionPairDataset(records, train_only, tags=tags)
    assert ds.missing_images == 0 and ds.num_images == 20 and len(ds) == sum(len(r.captions) for r in records)
    item = ds[0]
    assert set(item) == {"features", "boxes", "text", "image_id", "tags"}
    assert item["text"] == records[0].captions[0] and item["tags"] == tags[records[0].image_id]
    assert item["features"].shape[1] == 256 and item["boxes"].shape == (len(item["features"]), 4)
    assert "tags" not in RegionCaptionPairDataset(records, train_only)[0]

    with pytest.warns(DataWarning, match="20 of 28"):
        gallery = RegionImageDataset(records + test_records, RegionFeatureReader(test_split_features))
    assert len(gallery) == 8 and gallery[0]["index"] == 20 and gallery[0]["image_id"] == test_records[0].image_id
    out = RegionImageCollator(max_regions=1)([gallery[i] for i in range(4)] + [None])
    assert isinstance(out, RegionImageBatch) and out.skipped == 1 and out.image_ids.tolist()[0] == test_records[0].image_id
    assert out.regions.features.shape == (4, 1, 256) and out.regions.features.dtype == torch.float32
    assert out.regions.mask.all() and (out.regions.boxes[:, 0] == torch.tensor([0.0, 0.0, 1.0, 1.0])).all()
    empty = RegionImageCollator()([None])
    assert len(empty.regions) == 0 and empty.skipped == 1


def test_pair_collator_shapes_and_pickling(features, records, tok) -> None:
    ds = RegionCaptionPairDataset(records, RegionFeatureReader(features))
    collate = RegionPairCollator(tok, 16, max_regions=3)
    items = [ds[i] for i in range(6)]
    batch = collate(items + [None])
    assert isinstance(batch, Batch) and len(batch) == 6 and batch.skipped == 1
    assert batch.pixels.shape == (6, 0) and batch.image_input is batch.regions
    regions = batch.regions
    assert regions.features.shape[0] == 6 and regions.features.shape[1] <= 3 and regions.features.shape[2] == 256
    assert regions.features.dtype == torch.float32
    assert regions.mask.sum(1).tolist() == [min(3, len(it["features"])) for it in items]
    assert torch.equal(regions.boxes[:, 0], torch.tensor([[0.0, 0.0, 1.0, 1.0]]).expand(6, 4))
    ids, mask = tok.encode_batch([it["text"] for it in items], 16)
    assert torch.equal(batch.input_ids, ids) and torch.equal(batch.attention_mask, mask)
    assert batch.token_type_ids is None and batch.mlm_labels is None
    ds2, collate2 = pickle.loads(pickle.dumps((ds, collate)))  # DataLoader workers
    again = collate2([ds2[i] for i in range(6)])
    assert torch.equal(again.regions.features, regions.features)
    empty = collate([None])
    assert len(empty) == 0 and empty.regions.features.shape[0] == 0 and empty.pixels.shape == (0, 0)


def test_tags_segment(features, records, tags, tok) -> None:
    ds = RegionCaptionPairDataset(records, RegionFeatureReader(features), tags=tags)
    items = [ds[i] for i in range(0, 40, 5)]
    batch = RegionPairCollator(tok, 64, use_tags=True)(items)
    for row, it in enumerate(items):
        ids = batch.input_ids[row][batch.attention_mask[row] == 1]
        types = batch.token_type_ids[row][batch.attention_mask[row] == 1]
        seps = (ids == tok.sep_id).nonzero().squeeze(1).tolist()
        assert ids[0] == tok.cls_id and len(seps) == 2 and seps[1] == len(ids) - 1
        assert types[: seps[0] + 1].eq(0).all() and types[seps[0] + 1 :].eq(1).all()
        assert tok.decode(ids[1 : seps[0]]) == tok.decode(tok.encode_batch([it["text"]], 64)[0][0])
        assert tok.decode(ids[seps[0] + 1 : -1]) == it["tags"]
    assert (batch.token_type_ids[batch.attention_mask == 0] == 0).all()

    # too long: tag tokens go first, then the caption; an empty tag segment is a plain caption row
    caption, tag_text = "a red circle left of a blue square", "red circle blue square"
    cap_len = len(tok.encode_batch([caption], 64)[0][0]) - 2
    ids, mask, types = encode_with_tags(tok, [caption, caption, caption], [tag_text, "", tag_text], cap_len + 4)
    assert mask[0].sum() == cap_len + 4 and types[0].sum() == 2  # one tag token + [SEP]
    plain, plain_mask = tok.encode_batch([caption], cap_len + 4)
    assert torch.equal(ids[1][mask[1] == 1], plain[0]) and types[1].sum() == 0
    ids, mask, types = encode_with_tags(tok, [caption], [tag_text], 5)
    assert torch.equal(ids[0], tok.encode_batch([caption], 5)[0][0]) and types.sum() == 0


def test_region_mlm(features, records, tags, tok) -> None:
    ds = RegionCaptionPairDataset(records, RegionFeatureReader(features), tags=tags)
    items = [ds[i] for i in range(32)]
    collate = RegionPairCollator(tok, 48, mlm_rate=0.3, seed=5, use_tags=True, whole_word=True)
    a, b = collate(items), pickle.loads(pickle.dumps(collate))(items)
    assert torch.equal(a.mlm_input_ids, b.mlm_input_ids) and torch.equal(a.mlm_labels, b.mlm_labels)
    selected = a.mlm_labels != -100
    specials = torch.tensor(special_token_ids(tok))
    assert not (selected & (a.attention_mask == 0)).any() and not (selected & torch.isin(a.input_ids, specials)).any()
    assert (selected & (a.token_type_ids == 1)).any()  # tags are masked too, as in OSCAR
    other = RegionPairCollator(tok, 48, mlm_rate=0.3, seed=6, use_tags=True, whole_word=True)(items)
    assert not torch.equal(a.mlm_labels, other.mlm_labels)
    moved = a.to("meta")
    assert moved.regions.features.is_meta and moved.mlm_labels.is_meta and moved.token_type_ids.is_meta
    with pytest.raises(KeyError):
        RegionPairCollator(tok, 16, use_tags=True)([RegionCaptionPairDataset(records, RegionFeatureReader(features))[0]])
    assert isinstance(a.regions, RegionInputs)
