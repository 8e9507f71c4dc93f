"""open_clip CLIP state dicts -> vlp: encode_image / encode_text / logits equal open_clip's (fp32, 1e-5)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from vlp.pretrained import PretrainedError, load_pretrained

open_clip = pytest.importorskip("open_clip")

MODEL_CFG = {
    "embed_dim": 24,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 521, "width": 32, "heads": 4, "layers": 2},
}


def tiny_open_clip(quick_gelu: bool = True) -> torch.nn.Module:
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    model = CLIP(24, CLIPVisionCfg(**MODEL_CFG["vision_cfg"]), CLIPTextCfg(**MODEL_CFG["text_cfg"]), quick_gelu=quick_gelu).eval()
    for name, param in model.named_parameters():  # random norms/biases too: every mapped tensor matters
        if param.ndim == 1 and name != "logit_scale":
            torch.nn.init.normal_(param, mean=1.0 if "ln" in name and name.endswith("weight") else 0.0, std=0.1)
    with torch.no_grad():
        model.logit_scale.fill_(2.5)
    return model


def check_parity(theirs: torch.nn.Module, ours: torch.nn.Module, tokenizer) -> None:
    texts = ["a cat on a mat", "dog", "a dog on a cat on a mat!"]
    ids, mask = tokenizer.encode_batch(texts, max_length=16)
    # open_clip feeds the full context, padded with 0; ours sees the tokenizer's mask
    padded = F.pad(ids * mask, (0, 16 - ids.shape[1]))
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        image_ref, text_ref = theirs.encode_image(pixels, normalize=True), theirs.encode_text(padded, normalize=True)
        image, text = ours.encode_image(pixels), ours.encode_text(ids, mask)
        torch.testing.assert_close(image, image_ref, atol=1e-5, rtol=0)
        torch.testing.assert_close(text, text_ref, atol=1e-5, rtol=0)
        torch.testing.assert_close(ours.logit_scale() * image @ text.T, theirs.get_logits(pixels, padded)[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_open_clip_matches_reference(tmp_path: Path, clip_vocab, fmt: str) -> None:
    theirs = tiny_open_clip()
    file = tmp_path / f"clip.{fmt}"
    if fmt == "pt":
        torch.save(theirs.state_dict(), file)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in theirs.state_dict().items()}, str(file))
    (tmp_path / "cfg.json").write_text(json.dumps(MODEL_CFG))
    ours, tokenizer = load_pretrained("open_clip", file, config=tmp_path / "cfg.json", tokenizer=clip_vocab(tmp_path))
    check_parity(theirs, ours, tokenizer)


def test_open_clip_gelu_variant_and_inferred_config(tmp_path: Path, clip_vocab) -> None:
    theirs = tiny_open_clip(quick_gelu=False)
    torch.save({"state_dict": theirs.state_dict()}, tmp_path / "clip.pt")  # wrapped, as training checkpoints are
    config = {**MODEL_CFG, "quick_gelu": False}
    ours, tokenizer = load_pretrained("open_clip", tmp_path / "clip.pt", config=config, tokenizer=clip_vocab(tmp_path))
    check_parity(theirs, ours, tokenizer)
    # without a config the heads are inferred as width // 64 (OpenAI's rule): 32-wide towers cannot have that
    with pytest.raises(PretrainedError, match="64-wide heads"):
        load_pretrained("open_clip", tmp_path / "clip.pt")


def test_open_clip_errors_name_the_problem(tmp_path: Path) -> None:
    weights = tiny_open_clip().state_dict()
    weights["visual.transformer.resblocks.0.ls_1.gamma"] = torch.ones(32)
    del weights["ln_final.bias"]
    torch.save(weights, tmp_path / "broken.pt")
    with pytest.raises(PretrainedError) as err:
        load_pretrained("open_clip", tmp_path / "broken.pt", config=MODEL_CFG)
    assert "visual.transformer.resblocks.0.ls_1.gamma" in str(err.value) and "text_encoder.final_norm.bias" in str(err.value)
    with pytest.raises(PretrainedError, match="ls_init_value"):
        load_pretrained("open_clip", tmp_path / "broken.pt", config={**MODEL_CFG, "vision_cfg": {**MODEL_CFG["vision_cfg"], "ls_init_value": 0.1}})
    with pytest.raises(PretrainedError, match="text layers 3"):
        load_pretrained("open_clip", tmp_path / "broken.pt", config={**MODEL_CFG, "text_cfg": {**MODEL_CFG["text_cfg"], "layers": 3}})
