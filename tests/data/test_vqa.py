"""VQAv2 reading, answer vocabulary, soft targets, dataset/collator and question+answer joining."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from vlp.data.images import ImageTransform
from vlp.data.records import DataFormatError, DataWarning
from vlp.data.tokenizer import TextTokenizer
from vlp.data.vqa import (
    AnswerVocab,
    VQABatch,
    VQACollator,
    VQADataset,
    VQAReadStats,
    VQARecord,
    join_question_answer,
    read_scenes_vqa,
    read_vqa,
)


def test_reads_real_vqav2_sample(shared_data: Path) -> None:
    sample = shared_data / "vqa-sample"
    stats = VQAReadStats()
    records = read_vqa(sample / "questions.json", sample / "annotations.json", sample / "images", stats=stats)
    assert [r.question_id for r in records] == [458752000, 458752001, 458752002]
    assert stats.questions == 3 and stats.missing_images == stats.malformed == stats.unannotated == 0
    first = records[0]
    assert first.question == "What is this photo taken looking through?"
    assert len(first.answers) == 10 and first.multiple_choice_answer == "net"
    assert first.path.is_file() and first.image_id == 458752


def write(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj))
    return path


def test_skips_are_counted_and_warned(shared_data: Path, tmp_path: Path) -> None:
    image = "COCO_train2014_000000458752.jpg"
    shutil.copy(shared_data / "vqa-sample" / "images" / image, tmp_path / image)
    ten = [{"answer": "yes"}] * 10
    questions = write(tmp_path / "q.json", {"questions": [
        {"question_id": 1, "image_id": 5, "question": "Is it?", "image": image},
        {"question_id": 2, "image_id": 6, "question": "Is it?", "image": "missing.jpg"},
        {"question_id": 3, "image_id": 5, "image": image},  # no question text
        {"question_id": 4, "image_id": 5, "question": "Is it?", "image": image},  # no annotation
        {"question_id": 5, "image_id": 5, "question": "Is it?", "image": image},  # malformed annotation
        {"question_id": 1, "image_id": 5, "question": "Again?", "image": image},  # duplicate id
    ]})
    annotations = write(tmp_path / "a.json", {"annotations": [
        {"question_id": 1, "answers": ten, "answer_type": "yes/no", "question_type": "is it"},
        {"question_id": 2, "answers": ten},
        {"question_id": 3, "answers": ten},
        {"question_id": 5, "answers": "yes"},
    ]})
    stats = VQAReadStats()
    with pytest.warns(DataWarning) as caught:
        records = read_vqa(questions, annotations, stats=stats)
    assert [r.question_id for r in records] == [1]
    assert records[0].multiple_choice_answer == "yes"  # recomputed: the field is absent
    assert (stats.missing_images, stats.malformed, stats.unannotated) == (1, 3, 1)
    text = " ".join(str(w.message) for w in caught)
    assert "missing.jpg" in text and "missing key 'question'" in text and "duplicate id 1" in text
    with pytest.raises(DataFormatError, match="missing key 'questions'"):
        read_vqa(write(tmp_path / "bad.json", {"items": []}))


def test_coco_naming_from_data_subtype(shared_data: Path, tmp_path: Path) -> None:
    questions = write(tmp_path / "q.json", {"data_subtype": "train2014", "questions": [
        {"question_id": 1, "image_id": 458752, "question": "What?"}]})
    records = read_vqa(questions, image_root=shared_data / "vqa-sample" / "images")
    assert records[0].path.name == "COCO_train2014_000000458752.jpg" and records[0].answers == ()
    no_way = write(tmp_path / "q2.json", {"questions": [{"question_id": 1, "image_id": 1, "question": "What?"}]})
    with pytest.warns(DataWarning, match="no way to find the image"):
        assert read_vqa(no_way) == []


def test_scenes_split(tiny_scenes: Path) -> None:
    records = read_scenes_vqa(tiny_scenes, "test")
    raw = json.loads((tiny_scenes / "vqa" / "questions_test.json").read_text())["questions"]
    assert len(records) == len(raw) > 32  # several questions per image, none lost
    assert all(len(r.answers) == 10 and r.path.is_file() for r in records)
    assert {r.answer_type for r in records} == {"yes/no", "number", "other"}
    assert "how many" in {r.question_type for r in records}


def rec(qid: int, answers: list[str], mc: str | None = None) -> VQARecord:
    return VQARecord(qid, qid, Path("/x.png"), "q?", tuple(answers), "other", "what", mc or answers[0])


def test_vocab_and_soft_targets(tmp_path: Path) -> None:
    records = [rec(1, ["yes"] * 10), rec(2, ["Yes"] * 10), rec(3, ["no"] * 10), rec(4, ["Two"] * 10), rec(5, ["red"] * 10)]
    vocab = AnswerVocab.from_records(records, size=3)
    # Counts of the normalised majority answer: yes 2, then no/2/red 1 each (ties alphabetical).
    assert vocab.answers == ("yes", "2", "no")
    assert vocab.coverage(records) == pytest.approx(4 / 5)
    # 7 "yes", 2 "no", 1 "two" -> yes min(1, ...) = 1.0, no 0.6, "two" -> "2" 0.3; "maybe" has no class.
    index, score = vocab.targets(["yes"] * 6 + ["Yes."] + ["no", "no", "two"])
    assert dict(zip(index, score)) == {0: 1.0, 2: pytest.approx(0.6), 1: pytest.approx(0.3)}
    assert vocab.targets(["maybe"] * 10) == ([], [])
    vocab.save(tmp_path / "answers.json")
    assert AnswerVocab.load(tmp_path / "answers.json").answers == vocab.answers
    with pytest.raises(ValueError, match="unique"):
        AnswerVocab(["a", "a"])


def tokenizer_for(records: list[VQARecord]) -> TextTokenizer:
    texts = [r.question for r in records] + [a for r in records for a in r.answers]
    return TextTokenizer.train_wordpiece(texts, vocab_size=200)


def test_dataset_and_collator(tiny_scenes: Path) -> None:
    records = read_scenes_vqa(tiny_scenes, "val")
    vocab = AnswerVocab.from_records(records, size=8)
    tok = tokenizer_for(records)
    dataset = VQADataset(records, ImageTransform(32), vocab)
    collate = VQACollator(tok, max_length=24, num_answers=len(vocab), answer_length=6)
    batch = collate([dataset[i] for i in range(5)])
    assert isinstance(batch, VQABatch) and batch.pixels.shape == (5, 3, 32, 32)
    assert batch.targets.shape == (5, len(vocab))
    for row, r in enumerate(records[:5]):
        index, score = vocab.targets(r.answers)
        expected = torch.zeros(len(vocab))
        expected[index] = torch.tensor(score)
        assert torch.equal(batch.targets[row], expected)
        assert tok.decode(batch.input_ids[row]) == tok.decode(tok.encode_batch([r.question], 24)[0][0])
    assert batch.question_ids.tolist() == [r.question_id for r in records[:5]]
    assert batch.answer_ids[:, 0].eq(tok.cls_id).all()
    empty = collate([None, None])
    assert len(empty) == 0 and empty.skipped == 2 and empty.targets.shape == (0, len(vocab))


def test_join_question_answer_matches_per_row_concatenation() -> None:
    q = torch.tensor([[2, 10, 11, 3, 0], [2, 12, 3, 0, 0]])
    a = torch.tensor([[2, 20, 3, 0], [2, 21, 22, 3]])
    ids, mask, prefix = join_question_answer(q, (q > 0).long(), a, (a > 0).long(), pad_id=0)
    assert ids.tolist() == [[2, 10, 11, 3, 20, 3], [2, 12, 3, 21, 22, 3]]
    assert mask.tolist() == [[1] * 6, [1] * 6] and prefix.tolist() == [4, 3]
    ids, mask, _ = join_question_answer(q[:1], (q[:1] > 0).long(), a[1:], (a[1:] > 0).long(), pad_id=0)
    assert ids.tolist() == [[2, 10, 11, 3, 21, 22, 3]]
