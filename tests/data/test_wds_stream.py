"""WebDataset streaming: rank split, worker-independent order, epoch reshuffle and exact resume."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlp.data.formats import ImageSample
from vlp.data.formats.wds import write_wds
from vlp.data.formats.wds_stream import WebDatasetStream, shuffle_buffer_order
from vlp.data.images import ImageTransform

SHARD_SIZES = (7, 3, 5, 4, 6)  # uneven on purpose: 25 samples, odd for 2 ranks


def _png(i: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (6, 4), (i * 9 % 256, 50, 200)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("stream")
    paths: list[Path] = []
    image_id = 0
    for s, size in enumerate(SHARD_SIZES):
        samples = []
        for _ in range(size):
            data = b"broken" if image_id == 11 else _png(image_id)  # one corrupt image
            samples.append(ImageSample(image_id, "train", (f"caption {image_id}", f"other {image_id}"), f"{image_id}.png", data=data))
            image_id += 1
        (written,) = write_wds(samples, out / f"part{s}", samples_per_shard=100)
        paths.append(written.rename(out / f"{s:05d}.tar"))
    return paths


def _stream(shards, **kw) -> WebDatasetStream:
    kw.setdefault("batch_size", 3)
    kw.setdefault("shuffle_buffer", 4)
    return WebDatasetStream(shards, ImageTransform(4), seed=7, **kw)


def _ids(batches) -> list[int | None]:
    return [None if item is None else item["image_id"] for batch in batches for item in batch]


def test_shuffle_buffer_order_is_a_permutation():
    rng = np.random.default_rng(0)
    order = shuffle_buffer_order(50, 8, rng)
    assert sorted(order.tolist()) == list(range(50)) and order.tolist() != list(range(50))
    assert shuffle_buffer_order(5, 1, rng).tolist() == [0, 1, 2, 3, 4]
    # a buffer of b slots can delay an element but emits element i no earlier than position i - b + 1
    assert all(pos >= value - 8 for pos, value in enumerate(order.tolist()))


@pytest.mark.parametrize("world_size", [1, 2])
def test_ranks_disjoint_equal_and_cover_the_epoch(shards, world_size):
    per_rank = [_stream(shards, rank=r, world_size=world_size) for r in range(world_size)]
    orders = [s.epoch_order(0) for s in per_rank]
    assert {len(o) for o in orders} == {25 // world_size}
    rows = np.concatenate(orders)
    assert len(set(rows.tolist())) == len(rows)  # disjoint, no repeats
    assert len(rows) == 25 - 25 % world_size  # everything but the N % W remainder
    ids = [_ids(s.loader()) for s in per_rank]
    assert [len(i) for i in ids] == [25 // world_size] * world_size
    assert ids[0].count(None) + (ids[1].count(None) if world_size == 2 else 0) <= 1  # the corrupt one
    # epochs reshuffle, and the loader moved every stream on to epoch 1
    assert all(s.epoch == 1 and s.position == 0 for s in per_rank)
    assert not np.array_equal(per_rank[0].epoch_order(0), per_rank[0].epoch_order(1))


def test_order_does_not_depend_on_workers(shards):
    reference = _ids(_stream(shards, rank=1, world_size=2).loader())
    assert _ids(_stream(shards, rank=1, world_size=2).loader(num_workers=2)) == reference


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("rank", [0, 1])
def test_interrupted_iteration_resumes_exactly(shards, num_workers, rank):
    full_stream = _stream(shards, rank=rank, world_size=2)
    full_stream.set_epoch(1)
    uninterrupted = _ids(full_stream.loader())

    first = _stream(shards, rank=rank, world_size=2)
    first.set_epoch(1)
    consumed = []
    for i, batch in enumerate(first.loader(num_workers=num_workers)):
        consumed.append(batch)
        if i == 1:
            break
    state = first.state_dict()
    assert (state["epoch"], state["position"]) == (1, 6)

    resumed = _stream(shards, rank=rank, world_size=2)
    resumed.load_state_dict(state)
    rest = _ids(resumed.loader(num_workers=num_workers))
    assert _ids(consumed) + rest == uninterrupted
    assert resumed.state_dict()["epoch"] == 2


def test_items_captions_and_corrupt_image(shards):
    stream = _stream(shards, shuffle_buffer=0, shuffle_shards=False, batch_size=25)
    (batch,) = list(stream.loader())
    assert batch[11] is None  # the corrupt image: PairCollator counts it as skipped
    item = batch[0]
    assert item["image_id"] == 0 and item["text"] in ("caption 0", "other 0")
    assert tuple(item["pixels"].shape) == (3, 4, 4)
    assert [b and b["image_id"] for b in batch] == [i if i != 11 else None for i in range(25)]


def test_state_of_another_order_is_refused(shards):
    state = _stream(shards, rank=0, world_size=2).state_dict()
    with pytest.raises(ValueError, match="world_size: state has 2, stream has 1"):
        _stream(shards).load_state_dict(state)
    with pytest.raises(ValueError, match="rank"):
        _stream(shards, rank=3, world_size=2)


def test_collated_with_pair_collator(shards):
    from vlp.data.datasets import PairCollator
    from vlp.data.tokenizer import TextTokenizer

    tokenizer = TextTokenizer.train_wordpiece([f"caption {i} other" for i in range(25)], vocab_size=60)
    stream = _stream(shards, shuffle_buffer=0, shuffle_shards=False, batch_size=5)
    batches = list(stream.loader(PairCollator(tokenizer, max_length=8)))
    assert [len(b) + b.skipped for b in batches] == [5] * 5
    assert sum(b.skipped for b in batches) == 1 and batches[2].skipped == 1
