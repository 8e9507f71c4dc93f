"""Region features end to end: extraction (RoIAlign, Faster R-CNN), the vlp-regions-1 file format, encoding."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from vlp.data.regions import FORMAT, RegionFeatureReader, load_coco_boxes, write_region_features
from vlp.encoders import RegionEncoderConfig, RegionInputs, build_image_encoder
from vlp.encoders.image.cnn import ResNetTrunk
from vlp.encoders.image.region_extract import (
    build_faster_rcnn,
    extract_detector_regions,
    extract_region_features,
    xywh_to_xyxy,
)


@pytest.fixture(scope="module")
def trunk() -> ResNetTrunk:
    torch.manual_seed(0)
    return ResNetTrunk("resnet18", stages=2).eval()


def test_roi_features_of_given_boxes(trunk: ResNetTrunk) -> None:
    images = torch.randn(2, 3, 64, 64)
    boxes = [torch.tensor([[0.0, 0.0, 32.0, 32.0], [8.0, 16.0, 64.0, 48.0]]), torch.zeros(0, 4)]
    with torch.no_grad():
        out = extract_region_features(images, boxes, trunk)
        single = extract_region_features(images[:1], [boxes[0][1:]], trunk)
    assert out.features.shape == (2, 2, trunk.out_channels) and out.mask.tolist() == [[1, 1], [0, 0]]
    torch.testing.assert_close(out.boxes[0, 1], torch.tensor([0.125, 0.25, 1.0, 0.75]))
    torch.testing.assert_close(out.features[0, 1], single.features[0, 0])  # one box's feature ignores the others
    assert torch.equal(out.features[1], torch.zeros(2, trunk.out_channels))


def test_whole_image_box_is_the_default(trunk: ResNetTrunk) -> None:
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = extract_region_features(images, None, trunk)
        fmap = trunk(images)
    assert out.features.shape == (2, 1, trunk.out_channels) and out.mask.tolist() == [[1], [1]]
    torch.testing.assert_close(out.boxes[:, 0], torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 2))
    # 7x7 bilinear bins over the whole map average to roughly the global mean
    assert torch.nn.functional.cosine_similarity(out.features[:, 0], fmap.mean((2, 3))).min() > 0.9


def test_untrained_faster_rcnn_wiring() -> None:
    detector = build_faster_rcnn(
        min_size=64, max_size=64, rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=20, box_detections_per_img=10
    )
    images = [torch.rand(3, 48, 64), torch.rand(3, 64, 64)]
    with torch.no_grad():
        found = extract_detector_regions(images, detector, max_regions=4, score_threshold=0.0)
        nothing = extract_detector_regions(images, detector, score_threshold=1.01)  # no box passes
        given = extract_detector_regions(images, detector, boxes=[torch.tensor([[0.0, 0.0, 32.0, 24.0]]), torch.zeros(0, 4)])
    assert found.features.shape[0] == 2 and found.features.shape[-1] == 1024 and found.features.shape[1] <= 4
    assert ((found.boxes >= 0) & (found.boxes <= 1)).all()
    assert nothing.features.shape == (2, 0, 1024) and nothing.mask.shape == (2, 0)
    assert given.mask.tolist() == [[1], [0]]
    torch.testing.assert_close(given.boxes[0, 0], torch.tensor([0.0, 0.0, 0.5, 0.5]))
    detector.train()
    with pytest.raises(ValueError, match="eval"):
        extract_detector_regions(images, detector)


def test_feature_file_round_trip_over_shards(tmp_path: Path) -> None:
    items = [(10, torch.randn(3, 6), torch.rand(3, 4)), (11, torch.randn(0, 6), torch.rand(0, 4))]
    more = [(12, torch.randn(2, 6), torch.rand(2, 4))]
    a = write_region_features(tmp_path / "a.safetensors", items)
    b = write_region_features(tmp_path / "b.safetensors", more, dtype=torch.float32)
    from safetensors import safe_open

    with safe_open(str(a), framework="pt") as f:
        assert f.metadata() == {"format": FORMAT, "feature_dim": "6", "normalised_boxes": "true"}
        assert f.get_tensor("offsets").tolist() == [0, 3, 3] and f.get_tensor("image_ids").tolist() == [10, 11]
        assert f.get_tensor("features").dtype == torch.float16
    reader = RegionFeatureReader([a, b])
    assert len(reader) == 3 and 12 in reader and 13 not in reader and reader.feature_dim == 6
    features, boxes = reader[10]
    torch.testing.assert_close(features.float(), items[0][1].half().float())
    torch.testing.assert_close(boxes, items[0][2])
    assert reader[11][0].shape == (0, 6)
    torch.testing.assert_close(reader[12][0], more[0][1])
    batch = pickle.loads(pickle.dumps(reader)).batch([12, 11, 10])
    assert batch.features.dtype == torch.float32 and batch.mask.tolist() == [[1, 1, 0], [0, 0, 0], [1, 1, 1]]
    with pytest.raises(KeyError, match="13"):
        reader[13]
    with pytest.raises(ValueError, match="also in"):
        RegionFeatureReader([a, a])


def test_feature_file_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="duplicate"):
        write_region_features(tmp_path / "d.safetensors", [(1, torch.randn(1, 4), torch.rand(1, 4))] * 2)
    with pytest.raises(ValueError, match="normalised"):
        write_region_features(tmp_path / "n.safetensors", [(1, torch.randn(1, 4), torch.full((1, 4), 30.0))])
    with pytest.raises(ValueError, match="feature dim"):
        write_region_features(tmp_path / "f.safetensors", [(1, torch.randn(1, 4), torch.rand(1, 4)), (2, torch.randn(1, 5), torch.rand(1, 4))])
    from safetensors.torch import save_file

    save_file({"features": torch.zeros(1, 2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match=FORMAT):
        RegionFeatureReader(tmp_path / "other.safetensors")


def test_coco_boxes_to_encoder_end_to_end(tmp_path: Path, trunk: ResNetTrunk) -> None:
    coco = {
        "images": [{"id": 1, "width": 32, "height": 32}, {"id": 2, "width": 32, "height": 32}],
        "annotations": [{"image_id": 1, "bbox": [2, 4, 10, 8]}, {"image_id": 1, "bbox": [0, 0, 32, 32]}],
    }
    (tmp_path / "objects_val.json").write_text(json.dumps(coco))
    boxes = load_coco_boxes(tmp_path / "objects_val.json")
    torch.testing.assert_close(boxes[1][0], torch.tensor([2.0, 4.0, 12.0, 12.0]))
    torch.testing.assert_close(xywh_to_xyxy(torch.tensor([2.0, 4.0, 10.0, 8.0])), boxes[1][0])
    assert boxes[2].shape == (0, 4)
    with torch.no_grad():
        regions = extract_region_features(torch.randn(2, 3, 32, 32), [boxes[1], boxes[2]], trunk)
    items = [(i, regions.features[k, : int(regions.mask[k].sum())], regions.boxes[k, : int(regions.mask[k].sum())]) for k, i in enumerate((1, 2))]
    reader = RegionFeatureReader(write_region_features(tmp_path / "val.safetensors", items))
    inputs = reader.batch([1, 2])
    encoder = build_image_encoder(RegionEncoderConfig(feature_dim=trunk.out_channels, width=16, cls_token=True))
    out = encoder(inputs)
    assert isinstance(inputs, RegionInputs) and out.tokens.shape == (2, 3, 16) and torch.isfinite(out.pooled).all()
