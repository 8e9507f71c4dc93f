"""The how-to's commands really run: every `vlp ...` command and YAML block of
docs/train-on-your-data.md is executed here, in order, on the real COCO sample."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from vlp.cli.main import main

DOC = Path(__file__).resolve().parents[1] / "docs" / "train-on-your-data.md"


def blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


def commands() -> list[str]:
    found = []
    for block in blocks("bash"):
        for command in block.replace("\\\n", " ").splitlines():
            command = command.split("  #")[0].strip()
            if command.startswith("vlp "):
                found.append(command)
    return found


def write_butd_tsv(path: Path) -> None:
    """The region TSV the page converts: BUTD layout, random features, boxes inside 640x480 images."""
    import base64

    import numpy as np

    rng = np.random.default_rng(0)
    path.parent.mkdir(parents=True)
    rows = []
    for image_id, regions in ((9, 36), (25, 10), (30, 36)):
        xy = rng.random((regions, 2)) * [320, 240]
        boxes = np.concatenate([xy, xy + rng.random((regions, 2)) * [320, 240]], 1).astype("<f4")
        features = rng.random((regions, 64)).astype("<f4")
        encoded = [base64.b64encode(a.tobytes()).decode() for a in (boxes, features)]
        rows.append("\t".join([str(image_id), "640", "480", str(regions), *encoded]))
    path.write_text("\n".join(rows) + "\n")


def test_doc_commands_run(shared_data: Path, tmp_path: Path) -> None:
    def localise(text: str) -> str:
        return (
            text.replace("../shared/data", str(shared_data))
            .replace("runs/", f"{tmp_path}/runs/")
            .replace("my_experiment.yaml", str(tmp_path / "my_experiment.yaml"))
        )

    write_butd_tsv(tmp_path / "runs" / "features" / "butd.tsv")
    yaml_blocks = [b for b in blocks("yaml") if b.startswith("# my_experiment.yaml")]
    assert len(yaml_blocks) == 1
    (tmp_path / "my_experiment.yaml").write_text(localise(yaml_blocks[0]), encoding="utf-8")
    cmds = commands()
    assert len(cmds) >= 6
    for command in cmds:
        assert main(shlex.split(localise(command))[1:]) == 0, command
    assert (tmp_path / "runs" / "coco-sample" / "report.html").is_file()
    assert (tmp_path / "runs" / "coco-finetuned" / "checkpoints" / "latest").is_file()
    assert (tmp_path / "runs" / "vqa" / "questions.jsonl").is_file() and (tmp_path / "runs" / "features" / "coco.safetensors").is_file()
