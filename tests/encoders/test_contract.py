"""Contract tests run over every registered image and text encoder (timm's tests/test_models.py idea).

Each kind has a tiny config factory and an input maker below; a kind registered without one fails
`test_every_registered_kind_has_a_factory`, so new encoders cannot skip the contract.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from vlp.config import from_dict, to_dict
from vlp.encoders import (
    IMAGE_ENCODERS,
    TEXT_ENCODERS,
    CNNGridConfig,
    Encoder,
    EncoderOutput,
    HFTextConfig,
    ImageEncoderConfig,
    PatchEncoderConfig,
    RegionEncoderConfig,
    RegionInputs,
    TextEncoderConfig,
    TextTransformerConfig,
    TimmEncoderConfig,
    ViTConfig,
    build_image_encoder,
    build_text_encoder,
)

BATCH = 2


def pixels() -> torch.Tensor:
    return torch.randn(BATCH, 3, 32, 32)


def regions() -> RegionInputs:
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    return RegionInputs(torch.randn(BATCH, 4, 24), torch.rand(BATCH, 4, 4).sort(-1).values, mask)


def text() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(5, 50, (BATCH, 7))
    mask = torch.ones(BATCH, 7, dtype=torch.long)
    mask[1, 4:] = 0
    return ids, mask


@pytest.fixture(scope="session")
def hf_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny Hugging Face BertModel saved with save_pretrained (no download involved)."""
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=16, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    path = tmp_path_factory.mktemp("hf_bert")
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(path)
    return path


@dataclass
class Case:
    config: Callable[[pytest.FixtureRequest], Any]
    inputs: Callable[[], tuple]
    tokens: int  # expected N of the output tokens
    text: bool = False


CASES: dict[str, Case] = {
    "vit": Case(lambda r: ViTConfig(image_size=32, patch_size=8, width=32, depth=2, num_heads=2), lambda: (pixels(),), 17),
    "patch": Case(lambda r: PatchEncoderConfig(image_size=32, patch_size=8, width=32), lambda: (pixels(),), 17),
    "timm": Case(
        lambda r: TimmEncoderConfig(
            model_name="vit_tiny_patch16_224", image_size=32,
            model_kwargs={"patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2},
        ),
        lambda: (pixels(),), 17,
    ),
    "cnn_grid": Case(
        lambda r: CNNGridConfig(depth_name="resnet18", stages=2, image_size=32, width=32, position_embedding=True),
        lambda: (pixels(),), 16,
    ),
    "region": Case(lambda r: RegionEncoderConfig(feature_dim=24, width=32, cls_token=True, depth=1, num_heads=2), lambda: (regions(),), 5),
    "bert": Case(
        lambda r: TextTransformerConfig(vocab_size=50, max_length=16, width=32, depth=2, num_heads=2), text, 7, text=True
    ),
    "hf": Case(lambda r: HFTextConfig(path=str(r.getfixturevalue("hf_bert_dir")), max_length=16), text, 7, text=True),
}

KINDS = [("image", n) for n in IMAGE_ENCODERS.names()] + [("text", n) for n in TEXT_ENCODERS.names()]
IDS = [f"{side}-{name}" for side, name in KINDS]


def build(side: str, cfg: Any) -> Encoder:
    return build_image_encoder(cfg) if side == "image" else build_text_encoder(cfg)


def run(encoder: Encoder, inputs: tuple) -> EncoderOutput:
    return encoder(*inputs)


@pytest.fixture(params=KINDS, ids=IDS)
def case(request: pytest.FixtureRequest) -> tuple[str, str, Any, Case]:
    side, name = request.param
    entry = CASES[name]
    torch.manual_seed(0)
    return side, name, entry.config(request), entry


def test_every_registered_kind_has_a_factory() -> None:
    assert set(IMAGE_ENCODERS.names()) | set(TEXT_ENCODERS.names()) == set(CASES)


def test_shapes_masks_and_finite(case) -> None:
    side, name, cfg, entry = case
    encoder = build(side, cfg)
    inputs = entry.inputs()
    out = run(encoder, inputs)
    assert out.tokens.shape == (BATCH, entry.tokens, encoder.width)
    assert out.pooled is not None and out.pooled.shape == (BATCH, encoder.width)
    assert torch.isfinite(out.tokens).all() and torch.isfinite(out.pooled).all()
    if entry.text:
        torch.testing.assert_close(out.mask, inputs[1])
    elif name == "region":
        assert out.mask.tolist() == [[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]]  # [IMG] first, then the regions
    else:
        assert out.mask is None


def test_gradient_reaches_every_trainable_parameter(case) -> None:
    side, _, cfg, entry = case
    encoder = build(side, cfg).train()
    out = run(encoder, entry.inputs())
    loss = (out.tokens * torch.randn_like(out.tokens)).sum() + (out.pooled * torch.randn_like(out.pooled)).sum()
    loss.backward()
    trainable = [(n, p) for n, p in encoder.named_parameters() if p.requires_grad]
    assert trainable
    missing = [n for n, p in trainable if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_state_dict_round_trip(case) -> None:
    side, _, cfg, entry = case
    first = build(side, cfg).eval()
    torch.manual_seed(1)
    second = build(side, cfg).eval()
    second.load_state_dict(first.state_dict())
    inputs = entry.inputs()
    with torch.no_grad():
        a, b = run(first, inputs), run(second, inputs)
    torch.testing.assert_close(a.tokens, b.tokens, rtol=0, atol=0)
    torch.testing.assert_close(a.pooled, b.pooled, rtol=0, atol=0)


def test_eval_mode_is_deterministic(case) -> None:
    side, _, cfg, entry = case
    encoder = build(side, cfg).eval()
    inputs = entry.inputs()
    with torch.no_grad():
        a, b = run(encoder, inputs), run(encoder, inputs)
    torch.testing.assert_close(a.tokens, b.tokens, rtol=0, atol=0)


def test_gradient_checkpointing_keeps_outputs_and_gradients(case) -> None:
    side, _, cfg, entry = case
    encoder = build(side, cfg).train()
    inputs = entry.inputs()
    results = []
    for enabled in (False, True):
        encoder.set_grad_checkpointing(enabled)
        encoder.zero_grad(set_to_none=True)
        torch.manual_seed(2)
        out = run(encoder, inputs)
        (out.tokens.square().mean() + out.pooled.sum()).backward()
        grads = {n: p.grad.clone() for n, p in encoder.named_parameters() if p.grad is not None}
        results.append((out.tokens.detach(), grads))
    torch.testing.assert_close(results[0][0], results[1][0])
    assert results[0][1].keys() == results[1][1].keys()
    for name in results[0][1]:
        torch.testing.assert_close(results[0][1][name], results[1][1][name], atol=1e-6, rtol=1e-4, msg=name)


def test_lock_freezes_parameters_and_statistics(case) -> None:
    side, _, cfg, entry = case
    encoder = build(side, cfg)
    encoder.lock()
    assert not any(p.requires_grad for p in encoder.parameters())
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    encoder.train()
    inputs = entry.inputs()
    train_out = run(encoder, inputs)
    assert not train_out.tokens.requires_grad
    for key, value in encoder.state_dict().items():  # BatchNorm running stats included
        torch.testing.assert_close(value, before[key], rtol=0, atol=0, msg=key)
    with torch.no_grad():
        eval_out = run(encoder.eval(), inputs)
    torch.testing.assert_close(train_out.tokens, eval_out.tokens)


def test_partial_unlock_leaves_the_last_group_trainable(case) -> None:
    side, _, cfg, _ = case
    encoder = build(side, cfg)
    try:
        groups = encoder.lock_groups()
    except NotImplementedError:
        pytest.skip("no partial unlocking for this encoder")
    encoder.lock(unlocked_groups=1)
    trainable = {id(p) for p in encoder.parameters() if p.requires_grad}
    last = set()
    for item in groups[-1]:
        last |= {id(p) for p in (item.parameters() if isinstance(item, torch.nn.Module) else [item])}
    assert trainable and trainable == {i for i in last if i in trainable}
    with pytest.raises(ValueError, match="groups"):
        encoder.lock(unlocked_groups=len(groups) + 1)


def test_config_round_trips_through_the_union(case) -> None:
    side, name, cfg, _ = case
    union = ImageEncoderConfig if side == "image" else TextEncoderConfig
    data = to_dict(cfg)
    assert data["kind"] == name
    assert from_dict(union, data) == from_dict(type(cfg), data)
    assert type(from_dict(union, data)) is type(cfg)


def test_model_config_selects_encoders_by_kind() -> None:
    from vlp.models.image_text import ModelConfig

    cfg = from_dict(ModelConfig, {"image_encoder": {"kind": "region", "feature_dim": 24}, "text_encoder": {"kind": "hf", "path": "/m"}})
    assert isinstance(cfg.image_encoder, RegionEncoderConfig) and isinstance(cfg.text_encoder, HFTextConfig)
