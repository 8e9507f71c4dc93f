"""load_rgb error handling and ImageTransform geometry, normalisation and torchvision parity."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vlp.data.images import CLIP_MEAN, CLIP_STD, CorruptImageError, ImageTransform, load_rgb

COCO_IMAGE = Path("/work/shared/data/coco-sample/images/000000000285.jpg")


def _noise(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _encoded(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.skipif(not COCO_IMAGE.is_file(), reason="no COCO sample")
def test_load_rgb_real_jpeg():
    img = load_rgb(COCO_IMAGE)
    assert img.mode == "RGB" and img.size == (586, 640)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "LA", "CMYK"])
def test_load_rgb_converts_modes(tmp_path, mode):
    path = tmp_path / "x.png" if mode != "CMYK" else tmp_path / "x.jpg"
    _noise(10, 6).convert(mode).save(path)
    img = load_rgb(path)
    assert img.mode == "RGB" and img.size == (10, 6)


@pytest.mark.parametrize(
    "name, make",
    [
        ("truncated.jpg", lambda: _encoded(_noise(64, 64), "JPEG")[:400]),
        ("truncated.png", lambda: _encoded(_noise(64, 64), "PNG")[:600]),
        ("text.png", lambda: b"this is not an image\n"),
        ("empty.jpg", lambda: b""),
    ],
)
def test_load_rgb_corrupt(tmp_path, name, make):
    path = tmp_path / name
    path.write_bytes(make())
    with pytest.raises(CorruptImageError) as info:
        load_rgb(path)
    assert str(path) in str(info.value) and info.value.path == path
    assert isinstance(info.value, ValueError)


def test_load_rgb_missing_file(tmp_path):
    with pytest.raises(CorruptImageError, match="missing.png"):
        load_rgb(tmp_path / "missing.png")


def test_transform_shape_dtype_and_normalisation():
    img = _noise(64, 64)
    x = ImageTransform(64)(img)
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32 and x.is_contiguous()
    # Already the right size: no resampling, exactly (x/255 - mean)/std.
    raw = torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255
    expected = (raw - torch.tensor(CLIP_MEAN).view(3, 1, 1)) / torch.tensor(CLIP_STD).view(3, 1, 1)
    torch.testing.assert_close(x, expected, atol=1e-5, rtol=0)
    # Custom stats, deterministic.
    t = ImageTransform(64, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    y = t(img)
    torch.testing.assert_close(y, raw * 2 - 1, atol=1e-5, rtol=0)
    assert torch.equal(y, t(img))


def test_transform_resizes_shorter_side_and_center_crops():
    # 96x64 image: left third red, middle third green, right third blue. Shorter side is already
    # 64, so there is no resize, and the centre crop keeps columns 16..79.
    a = np.zeros((64, 96, 3), dtype=np.uint8)
    a[:, :32, 0] = 255
    a[:, 32:64, 1] = 255
    a[:, 64:, 2] = 255
    t = ImageTransform(64, mean=(0, 0, 0), std=(1, 1, 1))
    x = t(Image.fromarray(a))
    assert x.shape == (3, 64, 64)
    assert torch.equal(x, torch.from_numpy(a[:, 16:80]).permute(2, 0, 1).float() / 255)
    # Orientation is preserved (no flips): red stays on the left, blue on the right.
    assert x[0, :, 0].min() == 1 and x[2, :, -1].min() == 1
    # Tall image, downscaled: 32x80 -> 16x40 -> crop rows 12..27.
    x = ImageTransform(16)(_noise(32, 80))
    assert x.shape == (3, 16, 16)
    # Upscaling small images works too.
    assert ImageTransform(48)(_noise(20, 30)).shape == (3, 48, 48)


@pytest.mark.parametrize("size, wh", [(32, (64, 64)), (24, (50, 37)), (64, (64, 64)), (40, (33, 90))])
def test_transform_matches_torchvision(size, wh):
    tv = pytest.importorskip("torchvision.transforms")
    reference = tv.Compose(
        [
            tv.Resize(size, interpolation=tv.InterpolationMode.BICUBIC, antialias=True),
            tv.CenterCrop(size),
            tv.ToTensor(),
            tv.Normalize(CLIP_MEAN, CLIP_STD),
        ]
    )
    img = _noise(*wh, seed=size)
    torch.testing.assert_close(ImageTransform(size)(img), reference(img), atol=1e-5, rtol=0)


def test_transform_validates_and_pickles():
    import pickle

    with pytest.raises(ValueError):
        ImageTransform(0)
    with pytest.raises(ValueError):
        ImageTransform(8, std=(1.0, 0.0, 1.0))
    t = pickle.loads(pickle.dumps(ImageTransform(8)))
    img = _noise(8, 8)
    assert torch.equal(t(img), ImageTransform(8)(img))
