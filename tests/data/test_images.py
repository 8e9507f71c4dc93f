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


# ---------------------------------------------------------------- odd modes, EXIF, bombs


def test_sixteen_bit_gray_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257 * 100], [65535, 257 * 7]], dtype=np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")  # PIL keeps 16 bits: a plain convert would clip
    rgb = np.asarray(load_rgb(path))
    assert rgb.shape == (2, 2, 3)
    np.testing.assert_array_equal(rgb[..., 0], [[0, 100], [255, 7]])
    assert (rgb[..., 0] == rgb[..., 2]).all()


def test_int32_gray_tiff(tmp_path):
    values = np.array([[0, 65535], [257 * 3, 257 * 200]], dtype=np.int32)
    path = tmp_path / "i32.tif"
    Image.fromarray(values, mode="I").save(path)
    np.testing.assert_array_equal(np.asarray(load_rgb(path))[..., 1], [[0, 255], [3, 200]])


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_transparent_pixels_become_white(tmp_path, mode):
    rgba = np.zeros((2, 3, 4), dtype=np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)  # opaque: kept
    rgba[0, 1] = (0, 0, 0, 0)  # fully transparent black: white, not black
    rgba[0, 2] = (0, 0, 0, 128)  # half transparent black over white: mid grey
    path = tmp_path / "t.png"
    Image.fromarray(rgba, mode="RGBA").convert(mode).save(path)
    rgb = np.asarray(load_rgb(path)).astype(int)
    if mode == "RGBA":
        np.testing.assert_array_equal(rgb[0, 0], (10, 20, 30))
    np.testing.assert_array_equal(rgb[0, 1], (255, 255, 255))
    assert np.all(np.abs(rgb[0, 2] - 127) <= 1)


def test_palette_with_transparency(tmp_path):
    img = Image.new("P", (4, 2), 0)
    img.putpalette([0, 0, 0, 200, 30, 40] + [0, 0, 0] * 254)
    img.putpixel((1, 0), 1)
    path = tmp_path / "p.png"
    img.save(path, transparency=0)  # palette index 0 (black) is transparent
    assert Image.open(path).info.get("transparency") == 0
    rgb = np.asarray(load_rgb(path))
    np.testing.assert_array_equal(rgb[0, 1], (200, 30, 40))
    np.testing.assert_array_equal(rgb[0, 0], (255, 255, 255))


def test_cmyk_jpeg_colours(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("RGB", (16, 16), (200, 40, 40)).convert("CMYK").save(path, quality=100)
    assert Image.open(path).mode == "CMYK"
    rgb = np.asarray(load_rgb(path)).astype(int)
    assert np.all(np.abs(rgb - (200, 40, 40)) <= 6)


@pytest.mark.parametrize("orientation, size", [(1, (6, 4)), (3, (6, 4)), (6, (4, 6)), (8, (4, 6))])
def test_exif_orientation_applied(tmp_path, orientation, size):
    from vlp.data.images import image_size

    arr = np.zeros((4, 6, 3), dtype=np.uint8)
    arr[0, 0] = 255  # a white top-left pixel marks where the stored image's origin goes
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "o.png"
    Image.fromarray(arr).save(path, exif=exif)
    img = load_rgb(path)
    assert img.size == size and image_size(path) == size
    white = tuple(int(v) for v in np.argwhere(np.asarray(img)[..., 0] > 128)[0])
    h, w = size[1], size[0]
    expected = {1: (0, 0), 3: (h - 1, w - 1), 6: (0, w - 1), 8: (h - 1, 0)}[orientation]
    assert white == expected


def test_decompression_bomb_refused_from_header(tmp_path):
    from vlp.data.images import ImageTooLargeError, decode_rgb, image_size

    path = tmp_path / "bomb.png"
    Image.new("L", (3000, 2000)).save(path)  # tiny file, 6 M pixels
    with pytest.raises(ImageTooLargeError, match="6,000,000 pixels exceeds the limit of 1,000,000") as info:
        load_rgb(path, max_pixels=1_000_000)
    assert isinstance(info.value, CorruptImageError)  # datasets skip and count it
    with pytest.raises(ImageTooLargeError):
        image_size(path, max_pixels=1_000_000)
    with pytest.raises(ImageTooLargeError):
        decode_rgb(path.read_bytes(), "mem.png", max_pixels=1_000_000)
    assert load_rgb(path).size == (3000, 2000)  # under the default limit


def test_pil_bomb_warning_is_an_error(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("L", (100, 100)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6000)  # PIL warns between 6000 and 12000 pixels
    with pytest.raises(CorruptImageError, match="DecompressionBomb"):
        load_rgb(path)


def test_decode_rgb_bytes_and_empty():
    from vlp.data.images import decode_rgb

    data = _encoded(_noise(5, 3), "PNG")
    np.testing.assert_array_equal(np.asarray(decode_rgb(data, "x.png")), np.asarray(_noise(5, 3)))
    with pytest.raises(CorruptImageError, match=r"s\.tar:k\.jpg.*empty file"):
        decode_rgb(b"", "s.tar:k.jpg")
    with pytest.raises(CorruptImageError, match="k.jpg"):
        decode_rgb(_encoded(_noise(64, 64), "JPEG")[:300], "k.jpg")


def test_zero_byte_file_message(tmp_path):
    path = tmp_path / "zero.jpg"
    path.write_bytes(b"")
    with pytest.raises(CorruptImageError, match="empty file"):
        load_rgb(path)
