import torch

from vlp.models import build_model, model_preset
from dataclasses import replace


def tiny_model():
    cfg = model_preset("clip_tiny")
    cfg = replace(cfg, text_encoder=replace(cfg.text_encoder, vocab_size=50))
    return build_model(cfg)


def inputs(batch: int = 3):
    pixels = torch.randn(batch, 3, 32, 32)
    ids = torch.randint(7, 50, (batch, 9))
    mask = torch.ones(batch, 9, dtype=torch.long)
    mask[0, 6:] = 0
    return pixels, ids, mask


def test_shapes_normalised_and_finite() -> None:
    model = tiny_model()
    out = model(*inputs())
    assert out.image_embeds.shape == (3, 32) and out.text_embeds.shape == (3, 32)
    torch.testing.assert_close(out.image_embeds.norm(dim=-1), torch.ones(3))
    assert torch.isfinite(out.image_embeds).all() and torch.isfinite(out.text_embeds).all()
    assert abs(out.logit_scale.item() - 1 / 0.07) < 1e-3


def test_gradient_reaches_every_trainable_parameter() -> None:
    from vlp.objectives import itc_loss

    model = tiny_model()
    out = model(*inputs())
    itc_loss(out.image_embeds, out.text_embeds, out.logit_scale).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    # token-type row 1 is never used by a single-segment input
    assert missing == [], missing


def test_state_dict_round_trip_and_eval_determinism() -> None:
    model = tiny_model().eval()
    other = tiny_model()
    other.load_state_dict(model.state_dict())
    other.eval()
    x = inputs()
    a, b = model(*x), other(*x)
    torch.testing.assert_close(a.image_embeds, b.image_embeds)
    torch.testing.assert_close(a.text_embeds, model(*x).text_embeds)


def test_logit_scale_is_clamped() -> None:
    model = tiny_model()
    with torch.no_grad():
        model.log_logit_scale.fill_(10.0)
    assert abs(model.logit_scale().item() - 100.0) < 1e-3


def test_lock_freezes_image_tower() -> None:
    model = tiny_model()
    model.image_encoder.lock()
    assert not any(p.requires_grad for p in model.image_encoder.parameters())
    assert all(p.requires_grad for p in model.text_encoder.parameters())
