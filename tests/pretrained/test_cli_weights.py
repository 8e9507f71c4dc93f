"""`vlp convert-weights` and `vlp export` through the CLI entry point."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vlp.cli.main import main
from vlp.pretrained import load_pretrained

transformers = pytest.importorskip("transformers")


def test_convert_weights_hf_text_then_load(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = transformers.BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=20)
    transformers.BertModel(config).save_pretrained(tmp_path / "bert")
    assert main(["convert-weights", "hf-text", str(tmp_path / "bert"), str(tmp_path / "out")]) == 0
    assert "TextTransformer" in capsys.readouterr().out
    original, _ = load_pretrained("hf-text", tmp_path / "bert")
    converted, _ = load_pretrained("vlp", tmp_path / "out")
    ids = torch.randint(0, 60, (2, 7))
    with torch.no_grad():
        assert torch.equal(converted(ids, torch.ones_like(ids)).tokens, original(ids, torch.ones_like(ids)).tokens)
    assert main(["convert-weights", "nope", str(tmp_path / "bert"), str(tmp_path / "out")]) == 2
    assert "unknown source 'nope'" in capsys.readouterr().err


def test_export_command(tmp_path: Path, make_run, capsys: pytest.CaptureFixture[str]) -> None:
    make_run(tmp_path / "run", "clip_tiny")
    assert main(["export", str(tmp_path / "run"), str(tmp_path / "export")]) == 0
    assert (tmp_path / "export" / "model.safetensors").is_file() and "exported" in capsys.readouterr().out
    assert main(["export", str(tmp_path / "nowhere"), str(tmp_path / "x")]) == 2
    assert "no config.yaml" in capsys.readouterr().err
