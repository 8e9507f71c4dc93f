"""CaptionPairDataset / ImageDataset, their collators, Batch, and the recall gallery index."""

from __future__ import annotations

import dataclasses
import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from vlp.data.batch import Batch
from vlp.data.datasets import (
    CaptionPairDataset,
    ImageBatch,
    ImageCollator,
    ImageDataset,
    PairCollator,
    captions_and_image_index,
)
from vlp.data.images import ImageTransform
from vlp.data.records import ImageRecord
from vlp.data.tokenizer import TextTokenizer

SIZE = 16
CAPTIONS = [
    ("a red circle", "a circle that is red"),
    ("a blue square left of a green triangle",),
    ("two yellow stars", "stars above a cube", "a small scene"),
    ("one gray ring",),
]


def _png(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def records(tmp_path) -> list[ImageRecord]:
    return [
        ImageRecord(100 + i, _png(tmp_path / f"{i}.png", i), "train", caps)
        for i, caps in enumerate(CAPTIONS)
    ]


@pytest.fixture
def corrupt_records(tmp_path, records) -> list[ImageRecord]:
    _png(tmp_path / "whole.png", 99)
    data = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) * 2 // 3])  # cut inside the pixels
    (tmp_path / "text.png").write_text("not an image")
    bad = [
        ImageRecord(7, tmp_path / "truncated.png", "train", ("a truncated file", "again")),
        ImageRecord(8, tmp_path / "text.png", "train", ("a text file",)),
    ]
    return [records[0], bad[0], records[1], bad[1]]


@pytest.fixture(scope="module")
def tokenizer() -> TextTokenizer:
    return TextTokenizer.train_wordpiece([c for caps in CAPTIONS for c in caps] * 3, vocab_size=120)


def test_caption_pair_dataset_items(records):
    transform = ImageTransform(SIZE)
    ds = CaptionPairDataset(records, transform)
    assert len(ds) == 7 and ds.num_images == 4 and ds.transform is transform
    flat = [(r.image_id, c) for r in records for c in r.captions]
    for i, (image_id, text) in enumerate(flat):
        item = ds[i]
        assert (item["image_id"], item["text"]) == (image_id, text)
        assert item["pixels"].shape == (3, SIZE, SIZE) and item["pixels"].dtype == torch.float32
    assert torch.equal(ds[0]["pixels"], ds[1]["pixels"])  # two captions of one image
    assert torch.equal(ds[-1]["pixels"], ds[6]["pixels"])
    assert ds[-1]["text"] == "one gray ring"
    with pytest.raises(IndexError):
        ds[7]
    assert len(CaptionPairDataset([], transform)) == 0


def test_non_ascii_text_survives_storage(tmp_path):
    rec = ImageRecord(1, _png(tmp_path / "x.png", 0), "train", ("un café à côté 🙂", "ok"))
    ds = CaptionPairDataset([rec], ImageTransform(SIZE))
    assert [ds[0]["text"], ds[1]["text"]] == ["un café à côté 🙂", "ok"]


def test_corrupt_images_become_none_and_warn_once(corrupt_records, caplog):
    ds = CaptionPairDataset(corrupt_records, ImageTransform(SIZE))
    with caplog.at_level(logging.WARNING, logger="vlp.data.datasets"):
        items = [ds[i] for i in range(len(ds))] + [ds[1], ds[2]]
    assert [it is None for it in items] == [False, False, True, True, False, True, False, True]
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2  # once per path, however often it is read
    assert any("truncated.png" in m for m in messages) and any("text.png" in m for m in messages)


def test_pair_collator(records, corrupt_records, tokenizer):
    ds = CaptionPairDataset(corrupt_records, ImageTransform(SIZE))
    collate = PairCollator(tokenizer, max_length=6)
    batch = collate([ds[i] for i in range(len(ds))])
    assert isinstance(batch, Batch) and len(batch) == 3 and batch.skipped == 3
    assert batch.pixels.shape == (3, 3, SIZE, SIZE) and batch.pixels.dtype == torch.float32
    assert batch.image_ids.tolist() == [100, 100, 101]
    assert batch.input_ids.dtype == torch.long and batch.attention_mask.dtype == torch.long
    assert batch.input_ids.shape == batch.attention_mask.shape and batch.input_ids.shape[1] <= 6
    ids, mask = tokenizer.encode_batch(["a red circle", "a circle that is red", CAPTIONS[1][0]], 6)
    assert torch.equal(batch.input_ids, ids) and torch.equal(batch.attention_mask, mask)
    assert batch.input_ids[2, -1] == tokenizer.sep_id  # truncated row still ends with [SEP]

    empty = collate([None, None])
    assert len(empty) == 0 and empty.skipped == 2
    assert empty.pixels.shape[:2] == (0, 3) and empty.input_ids.shape[0] == 0
    assert empty.image_ids.dtype == torch.long
    with pytest.raises(ValueError):
        PairCollator(tokenizer, max_length=1)


def test_dataloader_with_workers(records, corrupt_records, tokenizer):
    ds = CaptionPairDataset(records + corrupt_records, ImageTransform(SIZE))
    collate = PairCollator(tokenizer, max_length=8)
    # Picklable pieces (what spawn-started workers need).
    clone = pickle.loads(pickle.dumps((ds, collate)))
    assert clone[0][3]["text"] == ds[3]["text"]
    loader = DataLoader(ds, batch_size=4, shuffle=False, num_workers=2, collate_fn=collate)
    batches = list(loader)
    assert sum(len(b) for b in batches) == 10 and sum(b.skipped for b in batches) == 3
    assert torch.cat([b.image_ids for b in batches]).tolist() == [
        100, 100, 101, 102, 102, 102, 103, 100, 100, 101,
    ]  # fmt: skip
    in_process = [collate([ds[j] for j in range(i, min(i + 4, len(ds)))]) for i in range(0, len(ds), 4)]
    for a, b in zip(batches, in_process):
        assert torch.equal(a.pixels, b.pixels) and torch.equal(a.input_ids, b.input_ids)


def test_image_dataset_and_collator(corrupt_records):
    ds = ImageDataset(corrupt_records, ImageTransform(SIZE))
    assert len(ds) == 4
    items = [ds[i] for i in range(4)]
    assert items[1] is None and items[3] is None
    assert (items[2]["image_id"], items[2]["index"]) == (101, 2)
    out = ImageCollator()(items)
    assert isinstance(out, ImageBatch)
    pixels, image_ids, skipped = out
    assert pixels.shape == (2, 3, SIZE, SIZE) and image_ids.tolist() == [100, 101] and skipped == 2
    pixels, image_ids, skipped = ImageCollator()([None])
    assert pixels.shape[0] == 0 and image_ids.shape == (0,) and skipped == 1
    batches = list(DataLoader(ds, batch_size=3, num_workers=0, collate_fn=ImageCollator()))
    assert [b.skipped for b in batches] == [1, 1]


def test_captions_and_image_index(records):
    texts, index = captions_and_image_index(records)
    assert texts == [c for caps in CAPTIONS for c in caps]
    assert index.dtype == torch.long and index.tolist() == [0, 0, 1, 2, 2, 2, 3]
    texts, index = captions_and_image_index([])
    assert texts == [] and index.shape == (0,)


def test_batch_to_and_subclass_fields():
    b = Batch(
        pixels=torch.zeros(2, 3, 4, 4),
        input_ids=torch.ones(2, 5, dtype=torch.long),
        attention_mask=torch.ones(2, 5, dtype=torch.long),
        image_ids=torch.tensor([3, 3]),
        skipped=1,
    )
    moved = b.to("cpu", non_blocking=True)
    assert len(moved) == 2 and moved.skipped == 1 and moved.input_ids.dtype == torch.long

    @dataclasses.dataclass
    class MLMBatch(Batch):
        labels: torch.Tensor | None = None

    m = MLMBatch(**dataclasses.asdict(b), labels=torch.full((2, 5), -100))
    assert isinstance(m.to(torch.device("cpu")), MLMBatch)
    if torch.cuda.is_available():
        pinned = m.pin_memory()
        assert pinned.pixels.is_pinned() and pinned.labels.is_pinned()
        on_gpu = m.to("cuda", non_blocking=True)
        assert on_gpu.labels.is_cuda and on_gpu.pixels.is_cuda and on_gpu.skipped == 1
