"""End to end through the console entry point: train a few steps, save, resume, evaluate."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from vlp.cli.main import main


def run_cli(*args: str) -> int:
    return main(list(args))


def test_train_resume_eval(tiny_scenes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    common = ["--preset", "clip_tiny", "--set", f"data.path={tiny_scenes}", "--set", "train.tensorboard=false"]
    assert run_cli("train", *common, "--set", "train.max_steps=6", "--run-dir", str(run)) == 0
    assert (run / "checkpoints" / "step_00000006" / "model.safetensors").is_file()
    assert (run / "tokenizer" / "tokenizer.json").is_file() and (run / "config.yaml").is_file()
    # resuming with a different max_steps is refused (the schedule would silently change)
    assert run_cli("train", *common, "--set", "train.max_steps=8", "--run-dir", str(run), "--resume") == 2
    assert "cannot resume with a different config" in capsys.readouterr().err
    assert run_cli("train", *common, "--set", "train.max_steps=6", "--run-dir", str(run), "--resume") == 0
    assert run_cli("eval", "--run-dir", str(run), "--report") == 0
    out = capsys.readouterr().out
    assert "test_novel" in out and "i2t_r1" in out
    results = json.loads((run / "eval.json").read_text())
    assert results["test"]["images"] == 32 and results["test"]["captions"] == 160
    assert "<svg" in (run / "report.html").read_text()


def test_mistyped_key_names_path_and_suggestion(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("config", "--preset", "clip_tiny", "--set", "model.text_encoder.widht=64") == 2
    err = capsys.readouterr().err
    assert "model.text_encoder.widht" in err and "model.text_encoder.width" in err


def test_unknown_preset_suggests(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("config", "--preset", "clip_smal") == 2
    assert "clip_small" in capsys.readouterr().err


def test_console_script_is_installed() -> None:
    out = subprocess.run([sys.executable, "-m", "vlp.cli", "models"], capture_output=True, text=True, check=True).stdout
    assert "clip_small" in out and "clip_tiny" in out


def test_every_config_file_resolves(capsys: pytest.CaptureFixture[str]) -> None:
    """configs/*.yaml stay valid as the config classes change."""
    configs = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
    assert configs
    for path in configs:
        assert run_cli("config", "--config", str(path)) == 0, capsys.readouterr().err


def test_region_model_train_and_foil_binding_eval(tiny_scenes: Path, tmp_path: Path) -> None:
    """A region-feature family end to end: features extracted from the scenes boxes, ITM foil scores."""
    run = tmp_path / "uniter"
    assert run_cli("train", "--preset", "uniter_tiny", "--set", f"data.path={tiny_scenes}", "--set", "train.max_steps=4",
                   "--set", "train.tensorboard=false", "--run-dir", str(run)) == 0
    assert run_cli("eval", "--run-dir", str(run), "--split", "test") == 0
    results = json.loads((run / "eval.json").read_text())["test"]
    assert results["foils"] == 160 and 0.0 <= results["itm_binding"] <= 100.0
    assert "i2t_r1" not in results  # no dual-encoder embeddings: retrieval needs ITM re-ranking
