"""Plain records shared by every reader: one image with its captions, and read statistics.

Readers turn a file format into ``ImageRecord`` lists; datasets turn records into tensors. Nothing
here touches the file system or torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ImageRecord:
    """One image and its human captions.

    ``image_id`` is the stable id of the image (Karpathy ``imgid`` or COCO image id). Several
    captions of one image share it, which duplicate-aware contrastive losses and recall@K rely on;
    readers guarantee it is unique within one read.
    """

    image_id: int
    path: Path  # absolute path of the image file
    split: str  # "train" | "val" | "test" | "test_novel" | ... ("restval" is mapped to "train")
    captions: tuple[str, ...]


class DataFormatError(ValueError):
    """A data file does not have the expected structure; the message names the file, entry and field."""


class DataWarning(UserWarning):
    """Data was skipped while reading (missing images, empty captions). Filter on this category."""


@dataclass
class ReadStats:
    """Counts a reader fills in when passed as ``stats=`` (fields are overwritten, not accumulated).

    ``images`` and ``captions`` count what was returned; the other fields count what was dropped,
    restricted to the requested splits.
    """

    images: int = 0
    captions: int = 0
    missing_images: int = 0  # listed in the file but not a file under the image root
    empty_captions: int = 0  # empty or whitespace-only captions dropped
    images_without_captions: int = 0  # images dropped because no caption was left
    url_images: int = 0  # http(s)/s3/... image references: cannot be downloaded here, dropped

    def reset(self) -> None:
        self.images = self.captions = self.missing_images = 0
        self.empty_captions = self.images_without_captions = self.url_images = 0
