"""Our ViT equals timm's VisionTransformer on copied weights (fp32, atol 1e-5)."""

from __future__ import annotations

import pytest
import torch

from vlp.encoders import ViTConfig, VisionTransformer
from vlp.encoders.convert import vit_state_dict_from_timm

timm = pytest.importorskip("timm")


def reference(**kw):
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    args = dict(
        img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_ratio=4.0, qkv_bias=True,
        class_token=True, reg_tokens=0, global_pool="token", num_classes=0,
    )
    return TimmViT(**{**args, **kw}).eval()


def test_vit_matches_timm_on_copied_weights() -> None:
    torch.manual_seed(0)
    theirs = reference()
    for param in theirs.parameters():  # timm zero-inits biases and tokens; random values test every path
        torch.nn.init.normal_(param, std=0.2)
    ours = VisionTransformer(ViTConfig(image_size=32, patch_size=8, width=32, depth=2, num_heads=2)).eval()
    ours.load_state_dict(vit_state_dict_from_timm(theirs.state_dict()), strict=True)
    pixels = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        features = theirs.forward_features(pixels)
        out = ours(pixels)
        torch.testing.assert_close(out.tokens, features, atol=1e-5, rtol=0)
        torch.testing.assert_close(out.pooled, theirs.forward_head(features, pre_logits=True), atol=1e-5, rtol=0)


def test_conversion_drops_the_classifier_and_rejects_unsupported_variants() -> None:
    with_head = reference(num_classes=7).state_dict()
    assert not any(k.startswith("head") for k in vit_state_dict_from_timm(with_head))
    with pytest.raises(ValueError, match="reg_token"):
        vit_state_dict_from_timm(reference(reg_tokens=1).state_dict())
    with pytest.raises(ValueError, match="ls1"):
        vit_state_dict_from_timm(reference(init_values=1e-5).state_dict())
