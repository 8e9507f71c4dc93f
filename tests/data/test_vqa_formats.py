"""VQA out as well as in: VQAv2 <-> JSONL round trips on the real sample and generated files, the
VizWiz-VQA layout, broken lines, and `vlp data convert|inspect --kind vqa`."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlp.cli.main import main
from vlp.data.formats.vqa_files import read_vqa_jsonl, read_vqa_records, write_vqa_records
from vlp.data.records import DataFormatError, DataWarning
from vlp.data.vqa import VQAReadStats, read_vqa


def _fields(records) -> list[tuple]:
    return [(r.question_id, r.image_id, r.path, r.question, r.answers, r.answer_type, r.question_type, r.multiple_choice_answer)
            for r in records]


def test_real_vqav2_to_jsonl_to_vqav2(shared_data: Path, tmp_path: Path) -> None:
    sample = shared_data / "vqa-sample"
    original = read_vqa(sample / "questions.json", sample / "annotations.json", sample / "images")
    assert len(original) == 3 and all(len(r.answers) == 10 for r in original)
    [jsonl] = write_vqa_records("jsonl", original, tmp_path / "j" / "vqa.jsonl")
    line = json.loads(jsonl.read_text().splitlines()[0])
    assert line["question_id"] == 458752000 and line["answers"][3] == "netting" and line["image"].endswith("COCO_train2014_000000458752.jpg")
    middle = read_vqa_records("jsonl", jsonl)
    written = write_vqa_records("vqav2", middle, tmp_path / "v2")
    assert [p.name for p in written] == ["questions.json", "annotations.json"]
    back = read_vqa_records("vqav2", tmp_path / "v2")
    assert _fields(middle) == _fields(back) == _fields(original)  # ids, image files, questions, the 10 answers
    assert back[0].path == sample.resolve() / "images" / "COCO_train2014_000000458752.jpg"


def test_real_consensus_answers_read_as_jsonl_list(shared_data: Path) -> None:
    sample = shared_data / "vqa-sample"
    stats = VQAReadStats()
    records = read_vqa_jsonl(sample / "consensus_answers.json", sample / "images", stats=stats)
    assert stats.questions == 20 and stats.missing_images == stats.malformed == stats.unannotated == 0
    assert records[0].question_id == 100187002 and records[0].answers == ("no",) and records[0].path.is_file()


def test_real_samples_inspect(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sample = shared_data / "vqa-sample"
    assert main(["data", "inspect", str(sample), "--kind", "vqa", "--image-root", str(sample / "images")]) == 0
    out = capsys.readouterr().out
    assert "questions   3" in out and "images      1" in out and "missing image files                          0" in out
    assert [line.split()[2] for line in out.splitlines() if line.strip().startswith("10 answers")] == ["3"]
    assert main(["data", "inspect", str(sample / "consensus_answers.json"), "--kind", "vqa", "--image-root", str(sample / "images")]) == 0
    assert "questions   20" in capsys.readouterr().out  # a .json list: the jsonl reader, guessed
    # VizWiz sample: captions only (no VQA annotations ship with it): inspected as captions,
    # refused as VQA with an error that says why
    vizwiz = shared_data / "vizwiz-sample" / "captions.jsonl"
    assert main(["data", "inspect", str(vizwiz), "--format", "jsonl"]) == 0
    out = capsys.readouterr().out
    assert "total                 50        50" in out and "unreadable images                            0" in out
    assert main(["data", "inspect", str(vizwiz), "--kind", "vqa"]) == 2
    assert "is a VQA question (a caption file?)" in capsys.readouterr().err


def _png(path: Path, seed: int) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (6, 8, 3), dtype=np.uint8)).save(buf, format="PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())


def test_vizwiz_layout_and_broken_lines(tmp_path: Path) -> None:
    """VizWiz-VQA annotation layout (a JSON list, answers as objects with a confidence, no ids),
    generated here: ids come from positions and first appearances."""
    for i in range(2):
        _png(tmp_path / "val" / f"VizWiz_val_{i:08d}.png", i)
    ten = [{"answer": a, "answer_confidence": "yes"} for a in ["soup"] * 7 + ["tomato soup"] * 3]
    vizwiz = [
        {"image": "val/VizWiz_val_00000000.png", "question": "What is this?", "answers": ten, "answer_type": "other", "answerable": 1},
        {"image": "val/VizWiz_val_00000001.png", "question": "What color?", "answers": ten[:1], "answer_type": "other", "answerable": 1},
        {"image": "val/VizWiz_val_00000000.png", "question": "Is it hot?", "answers": ten, "answer_type": "other", "answerable": 1},
    ]
    (tmp_path / "val.json").write_text(json.dumps(vizwiz))
    records = read_vqa_jsonl(tmp_path / "val.json")
    assert [(r.question_id, r.image_id) for r in records] == [(0, 0), (1, 1), (2, 0)]
    assert records[0].answers == ("soup",) * 7 + ("tomato soup",) * 3 and records[0].multiple_choice_answer == "soup"

    lines = [
        {"image": "val/VizWiz_val_00000000.png", "question": "q1", "answers": ["a"] * 10, "question_id": 1, "image_id": 5},
        "{not json",
        {"image": "val/VizWiz_val_00000000.png", "answers": ["a"]},  # no question
        {"image": "val/VizWiz_val_00000001.png", "question": "q3", "answers": ["b"], "question_id": 1},  # id taken
        {"image": "val/gone.png", "question": "q4", "answers": ["c"], "question_id": 4},
        {"image": "val/VizWiz_val_00000001.png", "question": "q5", "question_id": 5},  # no answers among answered
        {"image": "val/VizWiz_val_00000001.png", "question": "q6", "answers": ["d", 7], "question_id": 6},
        {"image": "val/VizWiz_val_00000001.png", "question": "q7", "answers": ["e"], "question_id": 7, "image_id": 6},
    ]
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines)
    (tmp_path / "broken.jsonl").write_text(text + "\n")
    stats = VQAReadStats()
    with pytest.warns(DataWarning) as caught:
        kept = read_vqa_jsonl(tmp_path / "broken.jsonl", stats=stats)
    assert [r.question_id for r in kept] == [1, 7]  # every valid question is still read
    assert (stats.malformed, stats.missing_images, stats.unannotated) == (4, 1, 1)
    messages = " ".join(str(w.message) for w in caught)
    assert "line 2: invalid JSON" in messages and "line 3.question" in messages and "line 4.question_id: duplicate id 1" in messages
    assert "gone.png not found" in messages and "question_id 5 has no answers" in messages


def test_test_split_without_answers_round_trips(tmp_path: Path) -> None:
    _png(tmp_path / "img" / "1.png", 1)
    (tmp_path / "test.jsonl").write_text(json.dumps({"image": "img/1.png", "question": "Why?", "question_id": 9, "image_id": 1}) + "\n")
    records = read_vqa_jsonl(tmp_path / "test.jsonl")
    assert records[0].answers == () and records[0].multiple_choice_answer == ""
    written = write_vqa_records("vqav2", records, tmp_path / "out")
    assert [p.name for p in written] == ["questions.json"]  # no annotations file for unanswered questions
    assert _fields(read_vqa(written[0])) == _fields(records)


def test_cli_convert_vqa_both_ways(shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sample = shared_data / "vqa-sample"
    jsonl = tmp_path / "vqa.jsonl"
    assert main(["data", "convert", str(sample / "questions.json"), str(jsonl), "--kind", "vqa", "--from", "vqav2", "--to", "jsonl",
                 "--annotations", str(sample / "annotations.json"), "--image-root", str(sample / "images")]) == 0
    assert "converted 3 questions (3 with answers) on 1 images" in capsys.readouterr().out
    assert main(["data", "convert", str(jsonl), str(tmp_path / "v2"), "--kind", "vqa", "--from", "jsonl", "--to", "vqav2"]) == 0
    back = read_vqa(tmp_path / "v2" / "questions.json", tmp_path / "v2" / "annotations.json")
    assert _fields(back) == _fields(read_vqa(sample / "questions.json", sample / "annotations.json", sample / "images"))
    capsys.readouterr()
    assert main(["data", "convert", str(jsonl), str(tmp_path / "x"), "--kind", "vqa", "--from", "jsonl", "--to", "karpathy"]) == 2
    assert "--to 'karpathy' is not a vqa format; --kind vqa knows: vqav2, jsonl" in capsys.readouterr().err
    with pytest.raises(DataFormatError, match="no questions.json"):
        read_vqa_records("vqav2", tmp_path)
