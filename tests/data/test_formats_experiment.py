"""The new formats reach experiments: `data.format=jsonl|csv|...` in load_records and `vlp train`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlp.cli.main import main
from vlp.data.formats import FormatOptions, read_samples, write_samples
from vlp.experiment.build import load_records
from vlp.experiment.config import DataConfig


@pytest.fixture(scope="module")
def coco_as_csv_per_split(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("csv_splits")
    src = shared_data / "coco-sample" / "dataset_coco.json"
    for split in ("train", "test"):
        write_samples("csv", read_samples("karpathy", src, splits=[split]), out / f"{split}.csv", FormatOptions(split_key="part"))
    return out


def test_load_records_file_per_split(coco_as_csv_per_split: Path) -> None:
    data = DataConfig(format="csv", path=str(coco_as_csv_per_split / "{split}.csv"), split_key="no_such_column")
    by_split = load_records(data, ["train", "test"])
    assert {k: len(v) for k, v in by_split.items()} == {"train": 79, "test": 17}
    assert sum(len(r.captions) for r in by_split["test"]) == 85


def test_load_records_split_column_and_clear_errors(coco_as_csv_per_split: Path, tmp_path: Path) -> None:
    data = DataConfig(format="csv", path=str(coco_as_csv_per_split / "test.csv"), split_key="part")
    assert len(load_records(data, ["test"])["test"]) == 17
    with pytest.raises(ValueError, match=r"split 'test' has no images .*split column.*\{split\}"):
        load_records(DataConfig(format="csv", path=data.path, split_key="none"), ["test"])
    with pytest.raises(FileNotFoundError, match="no .tar shards"):
        load_records(DataConfig(format="wds", path=str(tmp_path)), ["train"])
    with pytest.raises(ValueError, match="need another format"):  # shards are the training split only
        load_records(DataConfig(format="wds", path=str(tmp_path)), ["test"])


def test_train_on_jsonl(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "coco-sample" / "dataset_coco.json"
    write_samples("jsonl", read_samples("karpathy", src), tmp_path / "data" / "coco.jsonl")
    lines = (tmp_path / "data" / "coco.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["split"] == "val"
    run = tmp_path / "run"
    args = ["train", "--preset", "clip_tiny", "--set", "data.format=jsonl", "--set", f"data.path={tmp_path / 'data' / 'coco.jsonl'}",
            "--set", "data.eval_splits=[test]", "--set", "data.vocab_size=300", "--set", "train.max_steps=2",
            "--set", "train.batch_size=8", "--set", "train.warmup_steps=1", "--set", "train.tensorboard=false", "--run-dir", str(run)]
    assert main(args) == 0
    assert (run / "checkpoints" / "step_00000002" / "model.safetensors").is_file()
