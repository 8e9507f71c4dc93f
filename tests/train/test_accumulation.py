"""Contrastive gradient accumulation: 4 micro-batches of B equal one batch of 4B (loss and gradients)
for in-batch ITC, queue ITC with distillation plus token-weighted MLM, and through the Trainer."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from vlp.data.batch import Batch
from vlp.models import build_model, model_preset
from vlp.tasks import ObjectivesConfig, PretrainTask
from vlp.tasks.accumulation import AccumulationPlan
from vlp.train import TrainConfig, Trainer
from vlp.train.logging import read_metrics

VOCAB, B, K = 60, 4, 4


def _task(name: str, objectives: ObjectivesConfig) -> PretrainTask:
    torch.manual_seed(0)
    cfg = model_preset(name)
    return PretrainTask(build_model(replace(cfg, text_encoder=replace(cfg.text_encoder, vocab_size=VOCAB))), objectives)


def _big_batch(rows: int = K * B) -> Batch:
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(7, VOCAB, (rows, 8), generator=g)
    ids[:, 0], ids[:, -1] = 2, 3
    mask = torch.ones_like(ids)
    mask[::3, 6:] = 0  # some padding: LM token counts differ per micro-batch
    labels = torch.where(torch.rand(rows, 8, generator=g) < 0.3, ids, torch.full_like(ids, -100))  # uneven MLM counts
    labels[:, 0] = -100
    masked = torch.where(labels != -100, torch.full_like(ids, 4), ids)
    image_ids = torch.arange(rows) // 2  # two captions per image, pairs split across micro-batches sometimes
    return Batch(pixels=torch.randn(rows, 3, 32, 32, generator=g), input_ids=ids, attention_mask=mask, image_ids=image_ids,
                 mlm_input_ids=masked, mlm_labels=labels)


def _grads(task: PretrainTask) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in task.named_parameters() if p.grad is not None}


def _accumulated(task: PretrainTask, big: Batch, naive: bool = False) -> float:
    micro = [big._map(lambda t, j=j: t[j * B:(j + 1) * B]) for j in range(K)]
    if naive:
        total = 0.0
        for batch in micro:
            out = task(batch)
            (out.loss / K).backward()
            total += float(out.loss) / K
        return total
    plan = AccumulationPlan.build([task(b, features_only=True) for b in micro], task.dist)
    total = 0.0
    for j, batch in enumerate(micro):
        out = task(batch, plan=plan.at(j))
        out.loss.backward()
        total += float(out.value)
    return total


@pytest.mark.parametrize(
    "name,objectives",
    [("clip_tiny", ObjectivesConfig(itc=1)),
     ("albef_tiny", ObjectivesConfig(itc=1, mlm=1, queue_size=64, distill_alpha=0.4, distill_ramp_steps=1))],
    ids=["in-batch-itc", "queue-itc+mlm"],
)
def test_four_micro_batches_equal_one_big_batch(name: str, objectives: ObjectivesConfig) -> None:
    big = _big_batch()
    reference = _task(name, objectives)
    for _ in range(2):  # two steps: the second one's queue holds the first step's features
        reference.zero_grad(set_to_none=True)
        out = reference(big)
        out.loss.backward()
        ref_loss, ref_grads = float(out.loss.detach()), _grads(reference)
        reference.after_step()
    task = _task(name, objectives)
    for _ in range(2):
        task.zero_grad(set_to_none=True)
        loss = _accumulated(task, big)
        grads = _grads(task)
        task.after_step()
    assert loss == pytest.approx(ref_loss, abs=1e-5)
    assert grads.keys() == ref_grads.keys()
    for key in grads:
        torch.testing.assert_close(grads[key], ref_grads[key], atol=1e-5, rtol=0, msg=key)
    if task.queue is not None:
        torch.testing.assert_close(task.queue.image_queue, reference.queue.image_queue, atol=1e-6, rtol=0)


def test_naive_accumulation_is_not_the_big_batch_for_itc() -> None:
    big = _big_batch()
    reference = _task("clip_tiny", ObjectivesConfig(itc=1))
    out = reference(big)
    naive = _task("clip_tiny", ObjectivesConfig(itc=1))
    loss = _accumulated(naive, big, naive=True)
    assert abs(loss - float(out.loss)) > 1e-3  # k small contrastive problems are easier than one big one


class _Pairs(torch.utils.data.Dataset):
    def __init__(self, batch: Batch) -> None:
        self.batch = batch

    def __len__(self) -> int:
        return len(self.batch)

    def __getitem__(self, index: int) -> Batch:
        return self.batch._map(lambda t: t[index:index + 1])


def _collate(items: list[Batch]) -> Batch:
    return Batch(
        pixels=torch.cat([i.pixels for i in items]), input_ids=torch.cat([i.input_ids for i in items]),
        attention_mask=torch.cat([i.attention_mask for i in items]), image_ids=torch.cat([i.image_ids for i in items]),
    )


def test_trainer_accumulation_matches_the_big_batch(tmp_path: Path) -> None:
    dataset = _Pairs(_big_batch(2 * K * B))
    results = {}
    for label, batch_size, accum in (("big", K * B, 1), ("accumulated", B, K)):
        task = _task("clip_tiny", ObjectivesConfig(itc=1))
        cfg = TrainConfig(batch_size=batch_size, accum_steps=accum, max_steps=1, warmup_steps=0, log_every=1,
                          checkpoint_every=1, num_workers=0, tensorboard=False, device="cpu")
        Trainer(task, dataset, _collate, cfg, tmp_path / label).fit()
        results[label] = (read_metrics(tmp_path / label)[0]["loss"], _grads(task))
    (big_loss, big_grads), (acc_loss, acc_grads) = results["big"], results["accumulated"]
    assert acc_loss == pytest.approx(big_loss, abs=1e-5)
    for key in big_grads:
        torch.testing.assert_close(acc_grads[key], big_grads[key], atol=1e-5, rtol=0, msg=key)
