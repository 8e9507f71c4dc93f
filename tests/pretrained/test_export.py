"""vlp export: a training run -> model.safetensors + config.json + tokenizer, loaded back without the
training code, giving identical outputs; broken exports fail naming the problem."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from vlp.pretrained import PretrainedError, export_model, load_pretrained, save_pretrained

CAPTIONS = ["a red circle left of a blue square", "two green triangles", "a small yellow star above a circle"]

@pytest.mark.parametrize("preset", ["clip_tiny", "albef_tiny"])  # albef: tied MLM weights, fusion, ITM head
def test_export_round_trip_gives_identical_outputs(tmp_path: Path, make_run, preset: str) -> None:
    from vlp.experiment.run import load_trained_model

    make_run(tmp_path / "run", preset)
    out = export_model(tmp_path / "run", tmp_path / "export")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json", "vlp_tokenizer.json"]
    _, tokenizer, trained = load_trained_model(tmp_path / "run")
    loaded, loaded_tokenizer = load_pretrained("vlp", out)
    ids, mask = loaded_tokenizer.encode_batch(CAPTIONS, max_length=16)
    assert torch.equal(ids, tokenizer.encode_batch(CAPTIONS, max_length=16)[0])
    pixels = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        for model in (trained, loaded):
            model.eval()
        assert torch.equal(loaded.encode_image(pixels), trained.encode_image(pixels))
        assert torch.equal(loaded.encode_text(ids, mask), trained.encode_text(ids, mask))
        if trained.fusion is not None:
            fused = [m.fuse(m.image_features(pixels), m.text_for_fusion(ids, mask)) for m in (trained, loaded)]
            assert torch.equal(loaded.itm_logits(fused[1]), trained.itm_logits(fused[0]))
            assert torch.equal(loaded.mlm_logits(fused[1]), trained.mlm_logits(fused[0]))


def test_loading_an_export_needs_no_training_code(tmp_path: Path, make_run) -> None:
    tokenizer = make_run(tmp_path / "run", "clip_tiny")
    export_model(tmp_path / "run", tmp_path / "export")
    code = (
        "import sys; import vlp; model, tok = vlp.load_pretrained('vlp', sys.argv[1]); "
        "bad = sorted(m for m in sys.modules if m.startswith(('vlp.train', 'vlp.tasks', 'vlp.experiment', 'vlp.objectives'))); "
        "assert not bad, bad; print(type(model).__name__, tok.vocab_size)"
    )
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "export")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ImageTextModel", str(tokenizer.vocab_size)]


def test_broken_exports_fail_with_the_keys(tmp_path: Path, make_run) -> None:
    make_run(tmp_path / "run", "clip_tiny")
    out = export_model(tmp_path / "run", tmp_path / "export")
    weights = load_file(str(out / "model.safetensors"))
    del weights["image_proj.weight"]
    save_file(weights, str(out / "model.safetensors"))
    with pytest.raises(PretrainedError, match="missing keys.*image_proj.weight"):
        load_pretrained("vlp", out)
    meta = json.loads((out / "config.json").read_text())
    meta["config"]["embed_dim"] = 7
    weights = load_file(str(tmp_path / "run" / "checkpoints" / "step_00000001" / "model.safetensors"))
    save_file({k.removeprefix("model."): v for k, v in weights.items() if k.startswith("model.")}, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(meta))
    with pytest.raises(PretrainedError, match="image_proj.weight"):
        load_pretrained("vlp", out)
    (out / "config.json").write_text(json.dumps({**meta, "format": "other"}))
    with pytest.raises(PretrainedError, match="format 'other'"):
        load_pretrained("vlp", out)


def test_text_encoder_alone_round_trips(tmp_path: Path) -> None:
    from vlp.encoders import TextTransformer, TextTransformerConfig

    encoder = TextTransformer(TextTransformerConfig(vocab_size=50, max_length=16, width=32, depth=1, num_heads=2, pretrained="")).eval()
    save_pretrained(encoder, None, tmp_path)
    loaded, tokenizer = load_pretrained("vlp", tmp_path)
    ids = torch.randint(0, 50, (2, 9))
    assert tokenizer is None and torch.equal(loaded(ids, torch.ones_like(ids)).tokens, encoder(ids, torch.ones_like(ids)).tokens)
    with pytest.raises(PretrainedError, match="Linear"):
        save_pretrained(torch.nn.Linear(2, 2), None, tmp_path)
