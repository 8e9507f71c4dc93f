"""End to end: pre-train a tiny BLIP, fine-tune it for captioning and VQA, evaluate every task."""

import json
from pathlib import Path

import pytest

from vlp.cli.main import main
from vlp.experiment.adapt import finetune_objectives
from vlp.experiment.presets import experiment_preset


def run_cli(*args: str) -> int:
    return main(list(args))


@pytest.fixture(scope="module")
def pretrained(tiny_scenes: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("adapt") / "blip"
    assert run_cli(
        "train", "--preset", "blip_tiny", "--set", f"data.path={tiny_scenes}", "--set", "train.tensorboard=false",
        "--set", "train.max_steps=4", "--set", "train.batch_size=8", "--set", "train.warmup_steps=1", "--run-dir", str(run),
    ) == 0
    return run


def test_finetune_objectives_keep_only_the_task_losses() -> None:
    cfg = experiment_preset("blip_tiny")
    retrieval = finetune_objectives("retrieval", cfg).objectives
    assert (retrieval.itc, retrieval.itm, retrieval.lm) == (1.0, 1.0, 0.0)
    captioning = finetune_objectives("captioning", cfg).objectives
    assert (captioning.itc, captioning.itm, captioning.lm, captioning.distill_alpha) == (0.0, 0.0, 1.0, 0.0)
    assert captioning.queue_size == cfg.objectives.queue_size  # the momentum copy must still fit the checkpoint
    with pytest.raises(ValueError, match="LM head"):
        finetune_objectives("captioning", experiment_preset("clip_tiny"))


def test_evaluate_retrieval_zeroshot_and_captioning(pretrained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("evaluate", "retrieval", "--run-dir", str(pretrained), "--split", "test", "--k-test", "4") == 0
    retrieval = json.loads((pretrained / "eval_retrieval.json").read_text())["test"]
    assert {"i2t_r1", "rsum", "itm_i2t_r1", "itm_rsum", "t2i_medr"} <= set(retrieval)
    assert run_cli("evaluate", "zeroshot", "--run-dir", str(pretrained), "--split", "test") == 0
    zeroshot = json.loads((pretrained / "eval_zeroshot.json").read_text())["test"]
    assert 0.0 <= zeroshot["shape_top1"] <= 100.0 and zeroshot["colour_chance"] == pytest.approx(10.0)
    assert run_cli("evaluate", "captioning", "--run-dir", str(pretrained), "--split", "test", "--beams", "2") == 0
    captioning = json.loads((pretrained / "eval_captioning.json").read_text())["test"]
    assert {"bleu_4", "cider", "rouge_l"} <= set(captioning)
    captions = json.loads((pretrained / "captions_test.json").read_text())
    assert len(captions) == 32 and all(isinstance(c, str) for c in captions.values())
    assert "cider" in capsys.readouterr().out


def test_finetune_captioning_and_vqa(pretrained: Path, tmp_path: Path) -> None:
    steps = ["--set", "train.max_steps=2", "--set", "train.warmup_steps=0", "--set", "train.batch_size=8"]
    caption_run = tmp_path / "cap"
    assert run_cli("finetune", "captioning", "--init-from", str(pretrained), "--run-dir", str(caption_run), *steps) == 0
    assert (caption_run / "checkpoints" / "step_00000002").is_dir()
    vqa_run = tmp_path / "vqa"
    assert run_cli("finetune", "vqa", "--init-from", str(pretrained), "--run-dir", str(vqa_run), "--answers", "20", *steps) == 0
    assert len(json.loads((vqa_run / "answers.json").read_text())["answers"]) <= 20
    assert run_cli("evaluate", "vqa", "--run-dir", str(vqa_run), "--split", "test") == 0
    vqa = json.loads((vqa_run / "eval_vqa.json").read_text())["test"]
    assert 0.0 <= vqa["overall"] <= 100.0 and any(k.startswith("perQuestionType/") for k in vqa)
    assert run_cli("evaluate", "vqa", "--run-dir", str(pretrained), "--split", "test", "--method", "rank", "--answers", "10") == 0
    generative_run = tmp_path / "vqa_gen"
    assert run_cli("finetune", "vqa", "--generative", "--init-from", str(pretrained), "--run-dir", str(generative_run), "--answers", "20", *steps) == 0
    assert run_cli("evaluate", "vqa", "--run-dir", str(generative_run), "--split", "test", "--method", "rank") == 0
    assert "overall" in json.loads((generative_run / "eval_vqa.json").read_text())["test"]
    assert run_cli("evaluate", "vqa", "--run-dir", str(generative_run), "--split", "test", "--method", "generate") == 0
    assert "overall" in json.loads((generative_run / "eval_vqa.json").read_text())["test"]


def test_unknown_task_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        run_cli("evaluate", "segmentation", "--run-dir", "x")
    assert "invalid choice" in capsys.readouterr().err
