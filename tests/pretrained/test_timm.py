"""timm ViT weights files -> our ViT and the timm adapter: features equal timm's (fp32, 1e-5)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vlp.encoders import TimmEncoder, VisionTransformer
from vlp.pretrained import PretrainedError, load_pretrained

timm = pytest.importorskip("timm")

SMALL = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
KWARGS = dict(patch_size=8, embed_dim=32, depth=2, num_heads=2)


def saved(tmp_path: Path, **kw) -> tuple[torch.nn.Module, Path]:
    theirs = timm.create_model("vit_tiny_patch16_224", num_classes=5, **{**SMALL, **kw}).eval()
    for param in theirs.parameters():  # timm zero-inits biases and tokens
        torch.nn.init.normal_(param, std=0.2)
    from safetensors.torch import save_file

    file = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in theirs.state_dict().items()}, str(file))
    return theirs, file


@pytest.mark.parametrize("variant", [{}, {"pre_norm": True, "act_layer": "quick_gelu"}])
def test_timm_vit_file_into_our_vit_and_the_adapter(tmp_path: Path, variant: dict) -> None:
    theirs, file = saved(tmp_path, **variant)
    ours, tokenizer = load_pretrained("timm", file, model_name="vit_tiny_patch16_224", image_size=32, **KWARGS, **variant)
    assert isinstance(ours, VisionTransformer) and tokenizer is None
    assert ours.cfg.pre_norm == bool(variant) and ours.cfg.patch_bias == (not variant)
    adapter, _ = load_pretrained("timm", file, model_name="vit_tiny_patch16_224", image_size=32, adapter=True, **KWARGS, **variant)
    assert isinstance(adapter, TimmEncoder)
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = theirs.forward_features(pixels)
        pooled = theirs.forward_head(features, pre_logits=True)
        for out in (ours(pixels), adapter(pixels)):
            torch.testing.assert_close(out.tokens, features, atol=1e-5, rtol=0)
            torch.testing.assert_close(out.pooled, pooled, atol=1e-5, rtol=0)


def test_timm_unsupported_variants_fail_clearly(tmp_path: Path) -> None:
    _, file = saved(tmp_path, reg_tokens=2)
    with pytest.raises(PretrainedError, match="register tokens"):
        load_pretrained("timm", file, model_name="vit_tiny_patch16_224", image_size=32, reg_tokens=2, **KWARGS)
    _, file = saved(tmp_path)  # weights of a 2-block model into a 3-block one
    with pytest.raises(PretrainedError, match="missing keys.*blocks.blocks.2"):
        load_pretrained("timm", file, model_name="vit_tiny_patch16_224", image_size=32, **{**KWARGS, "depth": 3})
