"""Image loading and the deterministic evaluation-style image transform.

``ImageTransform`` is plain PIL + torch rather than torchvision.transforms.v2: measured on 64x64
PNG inputs (decoded, one thread) it does ~58k img/s when no resize is needed (S=64) versus ~22k
for v2 functional, and ~23k versus ~18k when resizing to S=32, with outputs equal to torchvision's
``Resize(S, BICUBIC) + CenterCrop(S) + Normalize`` on PIL images to 1e-6 (torchvision resizes PIL
images with PIL and uses the same output-size and crop rounding; tested). PNG decoding in
``load_rgb`` (~50-120 us per 64x64 file) dominates the per-item cost, not the transform (~17 us).
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

__all__ = [
    "CorruptImageError",
    "ImageTooLargeError",
    "MAX_IMAGE_PIXELS",
    "load_rgb",
    "decode_rgb",
    "image_size",
    "to_rgb",
    "ImageTransform",
    "CLIP_MEAN",
    "CLIP_STD",
]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class CorruptImageError(ValueError):
    """An image file could not be opened or decoded; ``path`` names it."""

    def __init__(self, path: str | os.PathLike[str], reason: str):
        self.path = Path(path)
        super().__init__(f"cannot load image {self.path}: {reason}")


class ImageTooLargeError(CorruptImageError):
    """An image has more pixels than allowed (a possible decompression bomb).

    A subclass of ``CorruptImageError`` so datasets skip and count it like any unreadable image
    instead of stopping a long run; the message gives the size and the limit.
    """


# An explicit limit instead of PIL's global ``Image.MAX_IMAGE_PIXELS`` (which any library may
# change or set to None): 89.5 M pixels is PIL's default, ~256 MB as 8-bit RGB. Photos of real
# datasets stay far below it; a 40-byte PNG that claims 100k x 100k does not.
MAX_IMAGE_PIXELS = 89_478_485

_EXIF_ORIENTATION = 0x0112


def load_rgb(path: str | os.PathLike[str], max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Open and fully decode an image file, converted to 8-bit RGB (see ``to_rgb``).

    Any failure (missing or empty file, truncated data, not an image, decoder error) becomes a
    ``CorruptImageError`` naming the path; an image over ``max_pixels`` an ``ImageTooLargeError``,
    decided from the header before any pixel is decoded. Decoding happens here, not lazily later,
    so a truncated file fails at this call. EXIF orientation is applied: phone photos (VizWiz)
    store pixels sideways plus an orientation tag, and captions describe the upright view.
    """
    return _decode(path, path, max_pixels)


def decode_rgb(data: bytes, name: str | os.PathLike[str], max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """``load_rgb`` for encoded bytes already in memory (a WebDataset member); ``name`` is used
    in error messages (e.g. ``shard.tar:key.jpg``)."""
    if not data:
        raise CorruptImageError(name, "empty file (0 bytes)")
    return _decode(io.BytesIO(data), name, max_pixels)


def image_size(source: str | os.PathLike[str] | bytes, max_pixels: int = MAX_IMAGE_PIXELS, name: str | None = None) -> tuple[int, int]:
    """``(width, height)`` as displayed (EXIF rotation applied) from the header only: PIL opens
    lazily, so no pixel data is decoded (a truncated body goes unnoticed here; ``load_rgb`` sees
    it). ``source`` is a path or encoded bytes (then ``name`` is used in errors). For inspection."""
    label = name if name is not None else ("<bytes>" if isinstance(source, bytes) else source)
    try:
        if (len(source) if isinstance(source, bytes) else os.path.getsize(source)) == 0:
            raise CorruptImageError(label, "empty file (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
                _check_pixels(img, label, max_pixels)
                w, h = img.size
                # orientations 5-8 swap width and height
                if img.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8):
                    w, h = h, w
                return w, h
    except CorruptImageError:
        raise
    except Exception as e:
        raise CorruptImageError(label, f"{type(e).__name__}: {e}") from e


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB, with the cases a plain ``convert("RGB")`` gets wrong fixed.

    - 16/32-bit grayscale (``I;16*``, ``I``; 16-bit PNGs open as these): ``convert`` clips every
      value above 255 to white, so the values are scaled from the 16-bit range instead.
    - Transparency (``RGBA``, ``LA``, ``PA``, ``P`` with a transparent palette entry): composited
      over white. ``convert`` would expose whatever colour hides under alpha 0 (often black, or
      noise from the encoder); web images with transparency are drawn on a light page.
    - ``CMYK``, ``YCbCr``, ``L``, ``1``, ``P``, ``F``: PIL's own conversion.
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(img, dtype=np.float64)
        gray = np.clip(np.round(values / 257.0), 0, 255).astype(np.uint8)  # 65535 -> 255
        return Image.fromarray(gray, mode="L").convert("RGB")
    if mode == "P" and "transparency" in img.info:
        img, mode = img.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _check_pixels(img: Image.Image, name: str | os.PathLike[str], max_pixels: int) -> None:
    w, h = img.size
    if w * h > max_pixels:
        raise ImageTooLargeError(
            name, f"{w}x{h} = {w * h:,} pixels exceeds the limit of {max_pixels:,} (possible decompression bomb)"
        )


def _decode(source: str | os.PathLike[str] | io.BytesIO, name: str | os.PathLike[str], max_pixels: int) -> Image.Image:
    try:
        # PIL's own bomb check (in open) only warns between its limit and twice that: an error too.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                _check_pixels(img, name, max_pixels)
                img.load()
                # exif_transpose copies the image even when there is nothing to do: only call it
                # for a real rotation/flip (orientations 2-8), which keeps load_rgb's cost as before
                if img.getexif().get(_EXIF_ORIENTATION, 1) in (2, 3, 4, 5, 6, 7, 8):
                    img = ImageOps.exif_transpose(img)
                return to_rgb(img)
    except CorruptImageError:
        raise
    except MemoryError:
        raise
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, struct.error, warnings...
        # "cannot identify image file" says less than this; checked only on failure (a stat per
        # image costs ~5% of decoding a 64 px PNG)
        if not isinstance(source, io.BytesIO) and os.path.isfile(source) and os.path.getsize(source) == 0:
            raise CorruptImageError(name, "empty file (0 bytes)") from e
        raise CorruptImageError(name, f"{type(e).__name__}: {e}") from e


@dataclass
class ImageTransform:
    """PIL image -> normalised float32 tensor ``[3, S, S]``.

    Resize the shorter side to ``image_size`` (PIL bicubic, which antialiases when shrinking;
    skipped when the shorter side already has that size), then centre-crop. No random flips:
    the built-in scene captions say "left of"/"right of", and a flip would make them false.
    """

    image_size: int
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    _scale: torch.Tensor = field(init=False, repr=False, compare=False)
    _shift: torch.Tensor = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.image_size < 1:
            raise ValueError(f"image_size must be positive, got {self.image_size}")
        if len(self.mean) != 3 or len(self.std) != 3 or any(s <= 0 for s in self.std):
            raise ValueError(f"mean/std must be 3 values with std > 0, got {self.mean}, {self.std}")
        mean = torch.tensor(self.mean, dtype=torch.float64).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float64).view(3, 1, 1)
        # (x / 255 - mean) / std == x * scale + shift
        self._scale = (1.0 / (255.0 * std)).float()
        self._shift = (-mean / std).float()

    def __call__(self, img: Image.Image) -> torch.Tensor:
        size = self.image_size
        img = to_rgb(img)
        w, h = img.size
        if min(w, h) != size:
            # Same output size as torchvision Resize(size): long side = int(size * long / short).
            if w <= h:
                w, h = size, int(size * h / w)
            else:
                w, h = int(size * w / h), size
            img = img.resize((w, h), Image.BICUBIC)
        if (w, h) != (size, size):
            left = int(round((w - size) / 2.0))
            top = int(round((h - size) / 2.0))
            img = img.crop((left, top, left + size, top + size))
        hwc = torch.from_numpy(np.array(img, dtype=np.uint8))  # [S, S, 3] uint8
        # Cast straight into a contiguous CHW buffer (a float op on the permuted view would keep
        # its HWC strides), then normalise in place: ~17 us at 64x64, versus ~25 us otherwise.
        out = torch.empty((3, size, size), dtype=torch.float32)
        out.copy_(hwc.permute(2, 0, 1))
        return out.mul_(self._scale).add_(self._shift)
