"""Answer ranking with the decoder: batched scoring against a naive per-candidate loop, first-token
pruning, a hand-made case a briefly trained model must get right, and the one-call evaluation."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from vlp.adapt.vqa import answer_vqa, evaluate_vqa, first_token_log_probs, predict_vqa, rank_answers
from vlp.data.images import ImageTransform
from vlp.data.tokenizer import TextTokenizer
from vlp.data.vqa import AnswerVocab, VQABatch, VQACollator, VQADataset, read_scenes_vqa
from vlp.models import ImageTextModel, build_model, model_preset
from vlp.tasks.vqa import VQAGenerativeTask, VQATask, answer_mode

QUESTIONS = ["is there a red cube?", "how many circles are there?", "what color is the star?"]
ANSWERS = ["yes", "no", "2", "red", "light blue", "3"]


@pytest.fixture(scope="module")
def tok() -> TextTokenizer:
    return TextTokenizer.train_wordpiece(QUESTIONS + ANSWERS, vocab_size=80)


def tiny_model(name: str, vocab_size: int) -> ImageTextModel:
    cfg = model_preset(name)
    return build_model(replace(cfg, text_encoder=replace(cfg.text_encoder, vocab_size=vocab_size))).eval()


def naive_score(model: ImageTextModel, pixels: torch.Tensor, question: list[int], answer: list[int]) -> float:
    """One candidate at a time: decode `[CLS] q [SEP] a [SEP]` alone and add up the answer's log-probs."""
    ids = torch.tensor([question + answer])
    mask = torch.ones_like(ids)
    mode = answer_mode(model)
    image = model.pair_features(pixels[None], ids, mask, unimodal=False).image_for_fusion
    prefix = torch.tensor([len(question)]) if mode == "seq2seq" else None
    log_probs = torch.log_softmax(model.lm_logits(model.decode(image, ids, mask, mode=mode, prefix_length=prefix)), -1)[0]
    return sum(float(log_probs[t - 1, ids[0, t]]) for t in range(len(question), ids.shape[1]))


def real(ids: torch.Tensor, mask: torch.Tensor) -> list[int]:
    return ids[mask.bool()].tolist()


@pytest.mark.parametrize("family", ["git_tiny", "blip_tiny", "coca_tiny"])
@torch.no_grad()
def test_batched_ranking_matches_naive_loop(family: str, tok: TextTokenizer) -> None:
    model = tiny_model(family, tok.vocab_size)
    pixels = torch.randn(len(QUESTIONS), 3, 32, 32)
    q_ids, q_mask = tok.encode_batch(QUESTIONS, 32)
    a_ids, a_mask = tok.encode_batch(ANSWERS, 8)
    scores = rank_answers(model, pixels, q_ids, q_mask, a_ids, a_mask, chunk=5)  # chunks cut across questions
    for b in range(len(QUESTIONS)):
        for c in range(len(ANSWERS)):
            expected = naive_score(model, pixels[b], real(q_ids[b], q_mask[b]), real(a_ids[c], a_mask[c])[1:])
            assert scores[b, c].item() == pytest.approx(expected, abs=1e-4), (family, b, c)


@torch.no_grad()
def test_first_token_pruning(tok: TextTokenizer) -> None:
    model = tiny_model("git_tiny", tok.vocab_size)
    pixels = torch.randn(len(QUESTIONS), 3, 32, 32)
    q_ids, q_mask = tok.encode_batch(QUESTIONS, 32)
    a_ids, a_mask = tok.encode_batch(ANSWERS, 8)
    full = rank_answers(model, pixels, q_ids, q_mask, a_ids, a_mask)
    assert torch.equal(rank_answers(model, pixels, q_ids, q_mask, a_ids, a_mask, k=len(ANSWERS)), full)
    pruned = rank_answers(model, pixels, q_ids, q_mask, a_ids, a_mask, k=2)
    kept = torch.isfinite(pruned)
    assert kept.sum(1).tolist() == [2, 2, 2]
    assert torch.allclose(pruned[kept], full[kept])
    # The kept answers are those whose first token is likeliest right after the question...
    image = model.pair_features(pixels, q_ids, q_mask, unimodal=False).image_for_fusion
    first = first_token_log_probs(model, image, q_ids, q_mask, a_ids)
    assert torch.equal(kept, torch.zeros_like(kept).scatter(1, first.topk(2, dim=1).indices, True))
    # Explicit candidates (say a classifier's top 1) are scored exactly as in the full ranking.
    candidates = torch.tensor([[3], [0], [1]])
    only = rank_answers(model, pixels, q_ids, q_mask, a_ids, a_mask, candidates=candidates)
    assert torch.isfinite(only).sum().item() == 3 and torch.allclose(only.gather(1, candidates)[:, 0], full.gather(1, candidates)[:, 0])


def test_generative_loss_is_the_answer_score(tiny_scenes: Path) -> None:
    """VQAGenerativeTask's loss = -(sum of the ranked answer scores) / (number of answer tokens):
    both score exactly the answer tokens after the question prefix."""
    records = read_scenes_vqa(tiny_scenes, "val")[:6]
    tok = TextTokenizer.train_wordpiece([r.question for r in records] + [a for r in records for a in r.answers], 100)
    collate = VQACollator(tok, 32, answer_length=6)
    batch = collate([VQADataset(records, ImageTransform(32))[i] for i in range(6)])
    for family in ("git_tiny", "blip_tiny"):
        task = VQAGenerativeTask(tiny_model(family, tok.vocab_size)).eval()
        with torch.no_grad():
            loss = task(batch).loss
            scores = rank_answers(task.model, batch.pixels, batch.input_ids, batch.attention_mask, batch.answer_ids, batch.answer_mask, candidates=torch.arange(6)[:, None])
        own = scores.diagonal()
        answer_tokens = batch.answer_mask[:, 1:].sum()
        assert loss.item() == pytest.approx(-(own.sum() / answer_tokens).item(), rel=1e-4), family


def test_trained_decoder_ranks_the_taught_answers(tok: TextTokenizer) -> None:
    """A tiny GIT taught "question -> answer" for 60 steps must rank those answers first;
    the images are constant, so only the question can decide."""
    torch.manual_seed(0)
    model = tiny_model("git_tiny", tok.vocab_size).train()
    taught = {QUESTIONS[0]: "yes", QUESTIONS[1]: "3", QUESTIONS[2]: "light blue"}
    q_ids, q_mask = tok.encode_batch(list(taught), 32)
    a_ids, a_mask = tok.encode_batch(list(taught.values()), 8)
    pixels = torch.zeros(3, 3, 32, 32)
    batch = VQABatch(pixels=pixels, input_ids=q_ids, attention_mask=q_mask, image_ids=torch.arange(3), answer_ids=a_ids, answer_mask=a_mask)
    task = VQAGenerativeTask(model)
    opt = torch.optim.AdamW(task.parameters(), lr=3e-3, weight_decay=0.0)
    for _ in range(60):
        loss = task(batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    vocab = AnswerVocab(ANSWERS)
    answer_tokens = tok.encode_batch(list(vocab.answers), 8)
    task.eval()
    predicted = answer_vqa(model, pixels, q_ids, q_mask, vocab, method="rank", answer_tokens=answer_tokens)
    assert predicted == list(taught.values())
    # Pruned to 2 candidates by the first token, the same answers win ("light blue" shares no first token).
    assert answer_vqa(model, pixels, q_ids, q_mask, vocab, method="rank", answer_tokens=answer_tokens, k=2) == predicted


def test_evaluate_vqa_both_methods(tiny_scenes: Path) -> None:
    records = read_scenes_vqa(tiny_scenes, "val")
    tok = TextTokenizer.train_wordpiece([r.question for r in records] + [a for r in records for a in r.answers], 150)
    vocab = AnswerVocab.from_records(records, size=10)
    common = dict(image_size=32, max_length=32, batch_size=16)
    task = VQATask(tiny_model("albef_tiny", tok.vocab_size), len(vocab))
    result = evaluate_vqa(task, records, tok, vocab, method="classifier", **common)
    predictions = predict_vqa(task, records, tok, vocab, method="classifier", **common)
    assert result.count == len(records) and set(predictions) == {r.question_id for r in records}
    assert set(predictions.values()) <= set(vocab.answers)
    assert set(result.per_answer_type) == {"yes/no", "number", "other"}
    assert task.training  # evaluation restores the mode it found
    git = tiny_model("git_tiny", tok.vocab_size)
    ranked = evaluate_vqa(git, records, tok, vocab, method="rank", k=4, **common)
    assert 0.0 <= ranked.overall <= 1.0 and ranked.count == len(records)
    with pytest.raises(ValueError, match="needs the fine-tuned VQATask"):
        predict_vqa(git, records, tok, vocab, method="classifier", **common)
    with pytest.raises(ValueError, match="LM head"):
        predict_vqa(task, records, tok, vocab, method="rank", **common)
