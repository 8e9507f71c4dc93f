"""UFO/VLMo shared transformer: expert routing and the encoder views that share its weights."""

from __future__ import annotations

import copy

import torch
from torch import nn

from vlp.encoders.base import EncoderOutput
from vlp.fusion import UnifiedConfig, UnifiedImageEncoder, UnifiedTextEncoder, UnifiedTransformer
from vlp.layers.experts import ModalityExpertsBlock

WIDTH, B, L, N = 16, 2, 4, 3


def _inputs() -> tuple[EncoderOutput, EncoderOutput]:
    g = torch.Generator().manual_seed(0)
    image = EncoderOutput(tokens=torch.randn(B, N, WIDTH, generator=g))
    text = EncoderOutput(tokens=torch.randn(B, L, WIDTH, generator=g), mask=torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]]))
    return image, text


def _vlmo(depth: int = 2, vl_layers: int = 1) -> UnifiedTransformer:
    return UnifiedTransformer(
        UnifiedConfig(depth=depth, num_heads=2, experts=True, vl_layers=vl_layers), WIDTH, WIDTH
    ).eval()


def _scramble(module: nn.Module) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.zero_()


def test_expert_block_routes_each_segment_to_its_own_ffn() -> None:
    block = ModalityExpertsBlock(WIDTH, 2, ["image", "text"]).eval()
    x = torch.randn(B, L + N, WIDTH)
    segments = [("text", L), ("image", N)]
    before = block(x, segments)
    _scramble(block.experts["text"])
    after = block(x, segments)
    torch.testing.assert_close(before[:, L:], after[:, L:])  # image tokens never touch the L-FFN
    assert not torch.allclose(before[:, :L], after[:, :L])


def test_image_tokens_never_pass_through_the_text_expert() -> None:
    fusion = _vlmo(depth=1, vl_layers=0)
    image, text = _inputs()
    joint, alone = fusion(image, text).image_tokens, fusion.encode_image(image).tokens
    text_alone = fusion.encode_text(text).tokens
    _scramble(fusion.blocks[0].experts["text"])
    # One layer: image outputs = shared attention + V-FFN; the zeroed L-FFN cannot reach them.
    torch.testing.assert_close(fusion(image, text).image_tokens, joint)
    torch.testing.assert_close(fusion.encode_image(image).tokens, alone)
    assert not torch.allclose(fusion.encode_text(text).tokens, text_alone)


def test_vl_expert_only_in_top_joint_layers() -> None:
    fusion = _vlmo(depth=2, vl_layers=1)
    assert "vl" not in fusion.blocks[0].experts and "vl" in fusion.blocks[1].experts
    image, text = _inputs()
    joint, alone = fusion(image, text), fusion.encode_image(image).tokens
    top = fusion.blocks[1]
    _scramble(top.experts["image"])
    _scramble(top.experts["text"])
    # The top layer of a joint pass uses the VL-FFN only ...
    torch.testing.assert_close(fusion(image, text).text_tokens, joint.text_tokens)
    torch.testing.assert_close(fusion(image, text).image_tokens, joint.image_tokens)
    # ... while a unimodal pass keeps the modality expert in every layer, as VLMo does.
    assert not torch.allclose(fusion.encode_image(image).tokens, alone)
    _scramble(top.experts["vl"])
    assert not torch.allclose(fusion(image, text).text_tokens, joint.text_tokens)


class _Model(nn.Module):
    """The way a model holds a unified transformer: once as fusion, borrowed by both encoders."""

    def __init__(self) -> None:
        super().__init__()
        self.fusion = UnifiedTransformer(UnifiedConfig(depth=1, num_heads=2, experts=True), WIDTH, WIDTH)
        self.image_encoder = UnifiedImageEncoder(self.fusion, nn.Linear(5, WIDTH))  # "patch embedding"
        self.text_encoder = UnifiedTextEncoder(self.fusion, nn.Embedding(10, WIDTH))


def test_views_share_weights_registered_once() -> None:
    model = _Model()
    shared = sum(p.numel() for p in model.fusion.parameters())
    own = sum(p.numel() for p in model.image_encoder.embed.parameters()) + model.text_encoder.embed.weight.numel()
    assert sum(p.numel() for p in model.parameters()) == shared + own
    keys = list(model.state_dict())
    assert len(keys) == len(set(keys)) and not any(k.startswith("image_encoder.shared") for k in keys)
    assert model.image_encoder.width == model.text_encoder.width == WIDTH

    pixels, ids = torch.randn(B, N, 5), torch.randint(0, 10, (B, L))
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    model.eval()
    image_out = model.image_encoder(pixels)
    text_out = model.text_encoder(ids, mask)
    torch.testing.assert_close(image_out.tokens, model.fusion.encode_image(EncoderOutput(model.image_encoder.embed(pixels))).tokens)
    assert text_out.mask is mask and text_out.pooled is not None and text_out.pooled.shape == (B, WIDTH)
    # The views feed the joint pass, which trains the same weights the encoders use.
    out = model.fusion(image_out, text_out)
    assert out.pooled is not None and out.pooled.shape == (B, WIDTH)


def test_views_follow_the_model_through_deepcopy_train_and_checkpointing() -> None:
    model = _Model()
    twin = copy.deepcopy(model)  # a momentum teacher
    assert twin.image_encoder.shared is twin.fusion and twin.text_encoder.shared is twin.fusion
    assert twin.fusion is not model.fusion
    twin.image_encoder.eval()
    assert not twin.fusion.training
    twin.text_encoder.set_grad_checkpointing(True)
    assert twin.fusion.grad_checkpointing
