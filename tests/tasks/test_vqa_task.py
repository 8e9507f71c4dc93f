"""VQATask (soft-score classifier) and VQAGenerativeTask train tiny models on the scenes questions."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from vlp.data.images import ImageTransform
from vlp.data.tokenizer import TextTokenizer
from vlp.data.vqa import AnswerVocab, VQABatch, VQACollator, VQADataset, read_scenes_vqa
from vlp.models import ImageTextModel, build_model, model_preset
from vlp.objectives.vqa import vqa_soft_loss
from vlp.tasks.base import Task
from vlp.tasks.vqa import VQAGenerativeTask, VQATask


def tiny_model(name: str, vocab_size: int) -> ImageTextModel:
    cfg = model_preset(name)
    return build_model(replace(cfg, text_encoder=replace(cfg.text_encoder, vocab_size=vocab_size)))


def scenes_setup(root: Path, answers: int = 16, answer_length: int = 0):
    records = read_scenes_vqa(root, "train")
    tok = TextTokenizer.train_wordpiece([r.question for r in records] + [a for r in records for a in r.answers], vocab_size=200)
    vocab = AnswerVocab.from_records(records, size=answers)
    dataset = VQADataset(records, ImageTransform(32), vocab)
    collate = VQACollator(tok, max_length=32, num_answers=len(vocab), answer_length=answer_length)
    return records, tok, vocab, dataset, collate


def fixed_batches(dataset, collate, count: int = 8, size: int = 16) -> list[VQABatch]:
    """Batches collated once: decoding PNGs every step would dominate a CPU test's time."""
    return [collate([dataset[i] for i in range(k * size, (k + 1) * size)]) for k in range(count)]


def train(task: Task, batches: list[VQABatch], steps: int = 25, lr: float = 3e-3) -> list[float]:
    opt = torch.optim.AdamW(task.parameters(), lr=lr, weight_decay=0.0)
    losses: list[float] = []
    task.train()
    for step in range(steps):
        out = task(batches[step % len(batches)])
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    return losses


def test_classifier_loss_goes_down_on_scenes(tiny_scenes: Path) -> None:
    _, tok, vocab, dataset, collate = scenes_setup(tiny_scenes)
    task = VQATask(tiny_model("albef_tiny", tok.vocab_size), len(vocab))
    losses = train(task, fixed_batches(dataset, collate))
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < 0.6 * first, f"VQA loss did not go down: {first:.3f} -> {last:.3f}"


def test_head_is_the_tasks_and_is_checkpointed() -> None:
    model = tiny_model("albef_tiny", 60)
    model_keys = set(model.state_dict())
    task = VQATask(model, num_answers=7)
    keys = set(task.state_dict())
    assert {f"model.{k}" for k in model_keys} | {k for k in keys if k.startswith("head.")} == keys
    assert "head.mlp.3.weight" in keys and task.head.mlp[3].out_features == 7
    assert set(model.state_dict()) == model_keys  # the model itself gained nothing VQA-specific
    # A pre-training checkpoint of the bare model loads into the task's model unchanged.
    task.model.load_state_dict(tiny_model("albef_tiny", 60).state_dict(), strict=True)


def test_classifier_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="fusion module"):
        VQATask(tiny_model("clip_tiny", 60), 5)
    task = VQATask(tiny_model("vilt_tiny", 60), 5)
    ids = torch.tensor([[2, 9, 3]])
    batch = VQABatch(pixels=torch.randn(1, 3, 32, 32), input_ids=ids, attention_mask=torch.ones_like(ids), image_ids=torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match="targets"):
        task(batch)
    batch.targets = torch.zeros(1, 4)
    with pytest.raises(ValueError, match="4 answers but the head has 5"):
        task(batch)
    batch.targets = torch.zeros(1, 5)
    assert torch.isfinite(task(batch).loss)
    with pytest.raises(ValueError, match="LM head"):
        VQAGenerativeTask(tiny_model("albef_tiny", 60))


def test_soft_loss_scaling_is_sum_over_answers() -> None:
    logits, targets = torch.randn(3, 5), torch.rand(3, 5)
    naive = sum(
        -(t * torch.log(torch.sigmoid(x)) + (1 - t) * torch.log(1 - torch.sigmoid(x)))
        for row_x, row_t in zip(logits, targets) for x, t in zip(row_x, row_t)
    ) / 3
    assert torch.allclose(vqa_soft_loss(logits, targets), naive, atol=1e-5)


@pytest.mark.parametrize("family", ["git_tiny", "blip_tiny"])
def test_generative_loss_goes_down(family: str, tiny_scenes: Path) -> None:
    _, tok, _, dataset, collate = scenes_setup(tiny_scenes, answer_length=6)
    task = VQAGenerativeTask(tiny_model(family, tok.vocab_size))
    assert task.mode == ("seq2seq" if family == "git_tiny" else "causal")
    losses = train(task, fixed_batches(dataset, collate))
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < 0.6 * first, f"answer LM loss did not go down: {first:.3f} -> {last:.3f}"
