"""Collate-time MLM masking (PairCollator + MLMMasker) and the optional Batch fields."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch.utils.data import DataLoader

from vlp.data.batch import Batch
from vlp.data.datasets import MLMMasker, PairCollator
from vlp.data.masking import special_token_ids, word_start_mask
from vlp.data.tokenizer import TextTokenizer
from vlp.encoders.image.region import RegionInputs

TEXTS = [
    "a red circle left of a blue square",
    "two yellow stars",
    "a small green triangle above a large purple hexagon",
    "one gray ring",
    "stars",
]


@pytest.fixture(scope="module")
def tok() -> TextTokenizer:
    # a vocabulary too small for every word, so some words are several "##" pieces (whole-word test)
    return TextTokenizer.train_wordpiece(TEXTS, vocab_size=150)


def _items(n: int = 10, offset: int = 0) -> list[dict]:
    return [
        {"pixels": torch.zeros(3, 4, 4), "text": TEXTS[(i + offset) % len(TEXTS)], "image_id": i // 2}
        for i in range(n)
    ]


def _check_labels(tok, batch: Batch) -> torch.Tensor:
    selected = batch.mlm_labels != -100
    specials = torch.tensor(special_token_ids(tok))
    assert not (selected & (batch.attention_mask == 0)).any()
    assert not (selected & torch.isin(batch.input_ids, specials)).any()
    assert torch.equal(batch.mlm_labels[selected], batch.input_ids[selected])
    assert torch.equal(batch.mlm_input_ids[~selected], batch.input_ids[~selected])
    assert batch.mlm_input_ids.shape == batch.input_ids.shape and batch.mlm_labels.dtype == torch.long
    return selected


def test_no_mlm_by_default(tok) -> None:
    batch = PairCollator(tok, 16)(_items())
    assert batch.mlm_input_ids is None and batch.mlm_labels is None and batch.regions is None
    assert batch.token_type_ids is None and batch.image_input is batch.pixels


def test_masks_are_a_pure_function_of_seed_and_batch(tok) -> None:
    collate = PairCollator(tok, 16, mlm_rate=0.3, seed=7)
    a, b = collate(_items()), collate(_items())
    assert torch.equal(a.mlm_input_ids, b.mlm_input_ids) and torch.equal(a.mlm_labels, b.mlm_labels)
    _check_labels(tok, a)
    clone = pickle.loads(pickle.dumps(collate))  # what a spawn-started DataLoader worker gets
    c = clone(_items())
    assert torch.equal(a.mlm_input_ids, c.mlm_input_ids) and torch.equal(a.mlm_labels, c.mlm_labels)
    fresh = PairCollator(tok, 16, mlm_rate=0.3, seed=7)(_items())  # a resumed run's new collator
    assert torch.equal(a.mlm_labels, fresh.mlm_labels)
    other_seed = PairCollator(tok, 16, mlm_rate=0.3, seed=8)(_items())
    assert not torch.equal(a.mlm_labels, other_seed.mlm_labels)
    other_batch = collate(_items(offset=1))  # different content: different draws
    assert not torch.equal(a.mlm_labels != -100, other_batch.mlm_labels != -100)


def test_same_masks_from_dataloader_workers(tok) -> None:
    items = _items(12)
    collate = PairCollator(tok, 16, mlm_rate=0.3, seed=1)
    loader = DataLoader(items, batch_size=4, num_workers=2, collate_fn=collate)
    for i, batch in enumerate(loader):
        ref = collate(items[4 * i : 4 * i + 4])
        assert torch.equal(batch.mlm_input_ids, ref.mlm_input_ids) and torch.equal(batch.mlm_labels, ref.mlm_labels)


def test_rate_and_replacement_split(tok) -> None:
    items = _items(400)
    batch = PairCollator(tok, 24, mlm_rate=0.15, seed=0)(items)
    selected = _check_labels(tok, batch)
    specials = torch.tensor(special_token_ids(tok))
    candidates = (batch.attention_mask == 1) & ~torch.isin(batch.input_ids, specials)
    rate = selected.sum().item() / candidates.sum().item()
    assert 0.13 < rate < 0.22  # 0.15 plus the forced target of rows that drew none
    masked = (batch.mlm_input_ids == tok.mask_id) & selected
    assert 0.7 < masked.sum().item() / selected.sum().item() < 0.9
    assert ((batch.mlm_labels != -100).sum(dim=1) >= 1).all()


def test_whole_word(tok) -> None:
    batch = PairCollator(tok, 24, mlm_rate=0.3, whole_word=True, seed=3)(_items(40))
    selected = _check_labels(tok, batch)
    starts = word_start_mask(batch.input_ids, tok)
    pieces = ~starts & (batch.attention_mask == 1)
    assert pieces.any(), "the test vocabulary should split some words"
    for row, col in pieces.nonzero().tolist():  # a continuation piece shares its word's selection
        assert selected[row, col] == selected[row, col - 1]


def test_empty_batch_has_empty_mlm_fields(tok) -> None:
    batch = PairCollator(tok, 16, mlm_rate=0.15)([None, None])
    assert len(batch) == 0 and batch.skipped == 2
    assert batch.mlm_input_ids.shape == (0, 0) and batch.mlm_labels.shape == (0, 0)


def test_masker_validation(tok) -> None:
    with pytest.raises(ValueError):
        MLMMasker(tok, rate=0.0)
    with pytest.raises(ValueError):
        PairCollator(tok, 16, mlm_rate=-0.1)
    m = MLMMasker(tok, 0.15, seed=1)
    ids, attn = tok.encode_batch(TEXTS, 16)
    assert m.batch_seed(ids, torch.arange(5)) != m.batch_seed(ids, torch.arange(1, 6))


def test_batch_moves_regions_and_image_input() -> None:
    regions = RegionInputs(torch.randn(2, 3, 8), torch.rand(2, 3, 4), torch.ones(2, 3, dtype=torch.long))
    batch = Batch(
        pixels=torch.zeros(2, 0),
        input_ids=torch.ones(2, 5, dtype=torch.long),
        attention_mask=torch.ones(2, 5, dtype=torch.long),
        image_ids=torch.tensor([1, 2]),
        regions=regions,
        token_type_ids=torch.zeros(2, 5, dtype=torch.long),
    )
    assert batch.image_input is regions and len(batch) == 2
    moved = batch.to("meta")  # a device every machine has: proves each tensor is moved
    assert isinstance(moved.regions, RegionInputs)
    assert all(t.is_meta for t in (moved.regions.features, moved.regions.boxes, moved.regions.mask))
    assert moved.token_type_ids.is_meta and moved.pixels.is_meta and moved.mlm_labels is None
    assert batch.regions.features.device.type == "cpu"  # the original is untouched
    if torch.cuda.is_available():
        pinned = batch.pin_memory()
        assert pinned.regions.features.is_pinned() and pinned.token_type_ids.is_pinned()
