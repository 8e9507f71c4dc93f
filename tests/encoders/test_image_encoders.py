"""Behaviour of each image encoder beyond the registry-wide contract."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vlp.encoders import (
    CNNGridConfig,
    PatchEncoderConfig,
    RegionEncoderConfig,
    RegionInputs,
    TimmEncoderConfig,
    ViTConfig,
    build_image_encoder,
)
from vlp.encoders.image.common import drop_patches
from vlp.encoders.image.region import box_geometry

X = torch.randn(2, 3, 32, 32)


def tiny_vit(**kw) -> ViTConfig:
    return ViTConfig(**{"image_size": 32, "patch_size": 8, "width": 32, "depth": 2, "num_heads": 2, **kw})


# --- patch dropout ---------------------------------------------------------------------------------------


def test_drop_patches_keeps_prefix_and_an_ordered_subset() -> None:
    x = torch.arange(2 * 9, dtype=torch.float).reshape(2, 9, 1)  # prefix token 0, patches 1..8
    out = drop_patches(x, 0.5, num_prefix_tokens=1, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 5, 1)
    assert torch.equal(out[:, 0], x[:, 0])
    for row, orig in zip(out[:, 1:, 0], x[:, 1:, 0]):
        assert set(row.tolist()) <= set(orig.tolist()) and row.tolist() == sorted(row.tolist())
    assert torch.equal(drop_patches(x, 0.0), x)


def test_vit_patch_dropout_only_in_training() -> None:
    encoder = build_image_encoder(tiny_vit(patch_dropout=0.5))
    assert encoder.train()(X).tokens.shape == (2, 1 + 8, 32)
    assert encoder.eval()(X).tokens.shape == (2, 1 + 16, 32)
    with pytest.raises(ValueError, match="patch_dropout"):
        tiny_vit(patch_dropout=1.0)


def test_vit_lock_unlocks_last_blocks_and_norm() -> None:
    encoder = build_image_encoder(tiny_vit(depth=3))
    encoder.lock(unlocked_groups=2)
    trainable = {n.split(".weight")[0].split(".bias")[0] for n, p in encoder.named_parameters() if p.requires_grad}
    assert {n.split(".")[2] for n in trainable if n.startswith("blocks.")} == {"1", "2"}
    assert "norm" in trainable and not any(n.startswith(("patch_embed", "pos_embed", "cls_token")) for n in trainable)


# --- patch (ViLT) ----------------------------------------------------------------------------------------


def test_patch_encoder_is_projection_plus_positions() -> None:
    encoder = build_image_encoder(PatchEncoderConfig(image_size=32, patch_size=8, width=16, cls_token=False)).eval()
    out = encoder(X)
    proj = encoder.patch_embed.proj(X).flatten(2).transpose(1, 2)
    torch.testing.assert_close(out.tokens, proj + encoder.pos_embed)
    torch.testing.assert_close(out.pooled, out.tokens.mean(1))
    with pytest.raises(ValueError, match="32x32"):
        encoder(torch.randn(1, 3, 40, 40))
    with pytest.raises(ValueError, match="cls_token"):
        PatchEncoderConfig(cls_token=False, pool="cls")


def test_patch_encoder_patch_sampling() -> None:
    encoder = build_image_encoder(PatchEncoderConfig(image_size=32, patch_size=8, width=16, patch_dropout=0.75))
    assert encoder.train()(X).tokens.shape == (2, 1 + 4, 16)


# --- timm ------------------------------------------------------------------------------------------------

VIT_KW = {"patch_size": 8, "depth": 1, "embed_dim": 32, "num_heads": 2}
TIMM_MODELS = {
    # name: (model_kwargs, expected tokens, prefix tokens)
    "vit_tiny_patch16_224": (VIT_KW, 17, 1),
    "deit_tiny_distilled_patch16_224": (VIT_KW, 18, 2),
    "beit_base_patch16_224": (VIT_KW, 17, 1),
    "cait_xxs24_224": ({**VIT_KW, "depth_token_only": 1}, 17, 1),
    "swin_tiny_patch4_window7_224": (
        {"patch_size": 4, "embed_dim": 16, "depths": (1, 1), "num_heads": (1, 2), "window_size": 4}, 16, 0
    ),
    "convnext_atto": ({"depths": (1, 1, 1, 1), "dims": (8, 8, 16, 16)}, 1, 0),
    "resnet18": ({"layers": [1, 1, 1, 1]}, 1, 0),
}


@pytest.mark.parametrize("name", list(TIMM_MODELS))
def test_timm_backbones_give_tokens_and_model_pooling(name: str) -> None:
    kwargs, num_tokens, prefix = TIMM_MODELS[name]
    encoder = build_image_encoder(TimmEncoderConfig(model_name=name, image_size=32, model_kwargs=kwargs)).eval()
    with torch.no_grad():
        out = encoder(X)
        features = encoder.trunk.forward_features(X)
        head = encoder.trunk.forward_head(features, pre_logits=True)
    assert encoder.width == encoder.trunk.num_features and encoder.num_prefix_tokens == prefix
    assert out.tokens.shape == (2, num_tokens, encoder.width)
    torch.testing.assert_close(out.pooled, head)
    if features.ndim == 4:  # the grid, flattened row-major whatever the model's layout
        grid = features if encoder.channels_last else features.permute(0, 2, 3, 1)
        torch.testing.assert_close(out.tokens, grid.reshape(2, -1, encoder.width))


def test_timm_mean_pool_skips_prefix_tokens_and_freezes_bypassed_head() -> None:
    cfg = TimmEncoderConfig(
        model_name="deit_tiny_distilled_patch16_224", image_size=32, pool="mean", model_kwargs=VIT_KW
    )
    out = build_image_encoder(cfg).eval()(X)
    torch.testing.assert_close(out.pooled, out.tokens[:, 2:].mean(1))
    beit = build_image_encoder(TimmEncoderConfig(model_name="beit_base_patch16_224", image_size=32, pool="mean", model_kwargs=VIT_KW))
    assert [n for n, p in beit.named_parameters() if not p.requires_grad] == ["trunk.fc_norm.weight", "trunk.fc_norm.bias"]
    with pytest.raises(ValueError, match="prefix"):
        build_image_encoder(TimmEncoderConfig(model_name="resnet18", pool="cls", model_kwargs={"layers": [1, 1, 1, 1]}))


def test_timm_cnn_takes_other_resolutions_and_image_size_only_goes_to_fixed_size_models() -> None:
    encoder = build_image_encoder(TimmEncoderConfig(model_name="resnet18", image_size=32, model_kwargs={"layers": [1, 1, 1, 1]}))
    assert encoder(torch.randn(1, 3, 64, 64)).tokens.shape == (1, 4, 512)


def test_timm_loads_local_checkpoint_only(tmp_path: Path) -> None:
    import timm
    from safetensors.torch import save_file

    reference = timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=5, **VIT_KW).eval()
    save_file(reference.state_dict(), str(tmp_path / "vit.safetensors"))
    cfg = TimmEncoderConfig(
        model_name="vit_tiny_patch16_224", image_size=32, pretrained=True,
        checkpoint_path=str(tmp_path / "vit.safetensors"), model_kwargs=VIT_KW,
    )
    encoder = build_image_encoder(cfg).eval()
    with torch.no_grad():
        torch.testing.assert_close(encoder(X).tokens, reference.forward_features(X))
    with pytest.raises(ValueError, match="never downloads"):
        TimmEncoderConfig(pretrained=True)
    with pytest.raises(FileNotFoundError):
        build_image_encoder(TimmEncoderConfig(pretrained=True, checkpoint_path=str(tmp_path / "missing.safetensors")))


def test_timm_lock_uses_timm_groups_and_freezes_batchnorm() -> None:
    encoder = build_image_encoder(TimmEncoderConfig(model_name="resnet18", image_size=32, model_kwargs={"layers": [1, 1, 1, 1]}))
    encoder.lock(unlocked_groups=1)
    trainable = [n for n, p in encoder.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("trunk.layer4.") for n in trainable)
    encoder.train()
    training = {n for n, m in encoder.named_modules() if isinstance(m, torch.nn.BatchNorm2d) and m.training}
    assert training and all(n.startswith("trunk.layer4.") for n in training)  # only layer4's BatchNorms train


# --- cnn_grid --------------------------------------------------------------------------------------------


def test_cnn_grid_stages_set_stride_and_channels() -> None:
    encoder = build_image_encoder(CNNGridConfig(depth_name="resnet50", stages=3, image_size=32)).eval()
    out = encoder(X)
    assert encoder.width == 1024 and out.tokens.shape == (2, (32 // 16) ** 2, 1024)
    torch.testing.assert_close(out.pooled, out.tokens.mean(1))
    with pytest.raises(ValueError, match="stages"):
        CNNGridConfig(stages=5)
    with pytest.raises(ValueError, match="stride"):
        CNNGridConfig(stages=4, image_size=48)


def test_cnn_grid_loads_torchvision_weights_and_samples_pixels(tmp_path: Path) -> None:
    import torchvision

    reference = torchvision.models.resnet18(weights=None).eval()
    torch.save(reference.state_dict(), tmp_path / "r18.pth")
    cfg = CNNGridConfig(depth_name="resnet18", stages=4, image_size=32, weights_path=str(tmp_path / "r18.pth"), patch_dropout=0.5)
    encoder = build_image_encoder(cfg).eval()
    trunk = torch.nn.Sequential(*list(reference.children())[:-2])
    with torch.no_grad():
        torch.testing.assert_close(encoder(X).tokens, trunk(X).flatten(2).transpose(1, 2))
    big = build_image_encoder(CNNGridConfig(depth_name="resnet18", stages=2, image_size=32, patch_dropout=0.5)).train()
    out = big(X)
    assert out.tokens.shape == (2, 8, 128) and out.pooled.shape == (2, 128)


# --- region ----------------------------------------------------------------------------------------------


def test_box_geometry() -> None:
    geometry = box_geometry(torch.tensor([0.1, 0.2, 0.5, 0.6]))
    torch.testing.assert_close(geometry, torch.tensor([0.1, 0.2, 0.5, 0.6, 0.4, 0.4, 0.16]))


def test_region_encoder_padding_does_not_leak() -> None:
    encoder = build_image_encoder(RegionEncoderConfig(feature_dim=8, width=16)).eval()
    features, boxes = [torch.randn(3, 8), torch.randn(1, 8)], [torch.rand(3, 4), torch.rand(1, 4)]
    inputs = RegionInputs.pad(features, boxes)
    noisy = RegionInputs(inputs.features + 5 * (1 - inputs.mask[..., None]), inputs.boxes, inputs.mask)
    a, b = encoder(inputs), encoder(noisy)
    torch.testing.assert_close(a.pooled, b.pooled)
    torch.testing.assert_close(a.tokens[1, :1], b.tokens[1, :1])
    alone = encoder(RegionInputs.pad(features[1:], boxes[1:]))
    torch.testing.assert_close(alone.pooled[0], a.pooled[1])
    assert a.mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_region_inputs_validation_and_errors() -> None:
    encoder = build_image_encoder(RegionEncoderConfig(feature_dim=8, width=16))
    with pytest.raises(TypeError, match="RegionInputs"):
        encoder(X)
    with pytest.raises(ValueError, match="8"):
        encoder(RegionInputs.pad([torch.randn(2, 4)], [torch.rand(2, 4)]))
    with pytest.raises(ValueError, match="disagree"):
        RegionInputs(torch.randn(2, 3, 8), torch.rand(2, 3, 4), torch.ones(2, 4))
    padded = RegionInputs.pad([torch.randn(5, 8), torch.randn(0, 8)], [torch.rand(5, 4), torch.rand(0, 4)], max_regions=3)
    assert padded.mask.tolist() == [[1, 1, 1], [0, 0, 0]]
    out = build_image_encoder(RegionEncoderConfig(feature_dim=8, width=16, cls_token=True))(padded)
    assert torch.isfinite(out.pooled).all() and out.mask[1].tolist() == [1, 0, 0, 0]
