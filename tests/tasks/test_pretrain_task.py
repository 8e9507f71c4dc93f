"""PretrainTask: state changes only in after_step, reproducible randomness, clear config errors."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from vlp.data.batch import Batch
from vlp.models import build_model, model_preset
from vlp.tasks import ObjectivesConfig, PretrainTask

VOCAB = 60


def tiny(name: str):
    cfg = model_preset(name)
    return build_model(replace(cfg, text_encoder=replace(cfg.text_encoder, vocab_size=VOCAB)))


def batch(size: int = 6) -> Batch:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(7, VOCAB, (size, 8), generator=g)
    ids[:, 0], ids[:, -1] = 2, 3
    mask = torch.ones_like(ids)
    labels = torch.full_like(ids, -100)
    labels[:, 3] = ids[:, 3]
    masked = ids.clone()
    masked[:, 3] = 4
    return Batch(
        pixels=torch.randn(size, 3, 32, 32, generator=g), input_ids=ids, attention_mask=mask,
        image_ids=torch.tensor([0, 0, 1, 2, 3, 4][:size]), mlm_input_ids=masked, mlm_labels=labels,
    )


def test_momentum_and_queue_change_only_in_after_step() -> None:
    task = PretrainTask(tiny("albef_tiny"), ObjectivesConfig(itc=1, itm=1, mlm=1, queue_size=16, distill_alpha=0.4, distill_ramp_steps=1))
    before = {k: v.clone() for k, v in task.momentum_model.state_dict().items()}
    queue_before = task.queue.id_queue.clone()
    out = task(batch())
    out.loss.backward()
    with torch.no_grad():  # pretend an optimiser step moved the online model
        for p in task.model.parameters():
            p.add_(0.01)
    for key, value in task.momentum_model.state_dict().items():
        assert torch.equal(value, before[key]), f"forward changed momentum state {key}"
    assert torch.equal(task.queue.id_queue, queue_before)
    task.after_step()
    assert int(task.step) == 1
    assert (task.queue.id_queue >= 0).sum() == 6  # the batch's momentum features were enqueued
    changed = [k for k, v in task.momentum_model.state_dict().items() if v.is_floating_point() and not torch.equal(v, before[k])]
    assert changed, "after_step did not move the momentum model"


def test_forward_in_eval_mode_enqueues_nothing() -> None:
    task = PretrainTask(tiny("albef_tiny"), ObjectivesConfig(itc=1, queue_size=16))
    task.eval()
    with torch.no_grad():
        task(batch())
    task.after_step()
    assert int((task.queue.id_queue >= 0).sum()) == 0


def test_named_losses_and_weighted_sum() -> None:
    task = PretrainTask(tiny("albef_tiny"), ObjectivesConfig(itc=1.0, itm=2.0, mlm=0.5))
    out = task(batch())
    assert set(out.losses) == {"itc_loss", "itm_loss", "mlm_loss"}
    expected = out.losses["itc_loss"] + 2.0 * out.losses["itm_loss"] + 0.5 * out.losses["mlm_loss"]
    torch.testing.assert_close(out.loss.detach(), expected)


def test_random_mix_is_reproducible_per_step() -> None:
    cfg = ObjectivesConfig(itc=1, itm=1, mlm=1, seq2seq_mlm=1, mix="random")
    picks = []
    for _ in range(2):
        torch.manual_seed(0)
        task = PretrainTask(tiny("ufo_tiny"), cfg)
        run = []
        for _ in range(6):
            run.append(tuple(task(batch()).losses))
            task.after_step()
        picks.append(run)
    assert picks[0] == picks[1]
    assert all(len(p) == 1 for p in picks[0])
    assert len(set(picks[0])) > 1  # more than one objective was drawn over 6 steps


def test_objective_the_model_cannot_compute_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="model.heads.itm"):
        PretrainTask(tiny("clip_tiny"), ObjectivesConfig(itc=1, itm=1))
    with pytest.raises(ValueError, match="at least one objective"):
        ObjectivesConfig(itc=0)


def test_lm_and_mlm_losses_over_target_rows_equal_the_full_logits_losses() -> None:
    """The task projects only positions with a target to the vocabulary; the losses must be those of
    the full [B, L, V] logits (padded captions, so many rows are skipped)."""
    from vlp.objectives import distillation_loss, lm_loss, token_prediction_loss

    data = batch()
    data.attention_mask[:, 5:] = torch.tensor([1, 0, 0, 1, 0, 0])[:, None]  # half the captions padded after 5 tokens
    data.input_ids.mul_(data.attention_mask)
    torch.manual_seed(0)
    task = PretrainTask(tiny("blip_tiny"), ObjectivesConfig(itc=0, lm=1))
    model = task.model
    image = model.pair_features(data.image_input, data.input_ids, data.attention_mask, unimodal=False).image_for_fusion
    decoded = model.decode(image, data.input_ids, data.attention_mask, mode="causal")
    expected = lm_loss(model.lm_logits(decoded), data.input_ids, data.attention_mask)
    torch.testing.assert_close(task(data).losses["lm_loss"], expected.detach())

    task = PretrainTask(tiny("albef_tiny"), ObjectivesConfig(itc=1, mlm=1, distill_alpha=0.4, distill_ramp_steps=0))
    model, teacher = task.model, task.momentum_model
    logits = []
    for m in (model, teacher):
        feats = m.pair_features(data.image_input, data.mlm_input_ids, data.attention_mask, unimodal=False)
        logits.append(m.mlm_logits(m.fuse(feats.image_for_fusion, m.text_for_fusion(data.mlm_input_ids, data.attention_mask), mode="bidirectional")))
    predicted = data.mlm_labels != -100
    expected = 0.6 * token_prediction_loss(logits[0], data.mlm_labels) + 0.4 * distillation_loss(logits[0], logits[1], mask=predicted)
    torch.testing.assert_close(task(data).losses["mlm_loss"], expected.detach())


def test_mlm_without_distillation_takes_the_fused_loss_and_matches_full_logits() -> None:
    from vlp.objectives import token_prediction_loss

    data = batch()
    torch.manual_seed(0)
    task = PretrainTask(tiny("albef_tiny"), ObjectivesConfig(itc=0, mlm=1))
    model = task.model
    feats = model.pair_features(data.image_input, data.mlm_input_ids, data.attention_mask, unimodal=False)
    logits = model.mlm_logits(model.fuse(feats.image_for_fusion, model.text_for_fusion(data.mlm_input_ids, data.attention_mask), mode="bidirectional"))
    expected = token_prediction_loss(logits, data.mlm_labels)
    out = task(data)
    torch.testing.assert_close(out.losses["mlm_loss"], expected.detach())
    out.loss.backward()
    expected_grads = torch.autograd.grad(expected, [p for p in model.parameters() if p.requires_grad], allow_unused=True)
    for (name, param), ref in zip(((n, p) for n, p in model.named_parameters() if p.requires_grad), expected_grads, strict=True):
        if ref is not None:
            torch.testing.assert_close(param.grad, ref, msg=name)
