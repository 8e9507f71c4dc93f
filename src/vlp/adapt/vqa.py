"""Answering VQA questions: the fine-tuned classifier, or ranking candidate answers with the decoder.

Ranking (ALBEF and BLIP rank a closed answer list with their decoders; GIT puts the question in
the prefix): each candidate answer's score is its summed log-likelihood as the continuation of
``[CLS] question [SEP]`` given the image,

    score(a | I, q) = sum_t log p(a_t | I, q, a_<t)      (a ends with [SEP], so "2" and "2 cubes" differ)

Image features are computed once per question batch and repeated per candidate row; candidates run
in chunks of ``chunk`` rows with one uncached forward each. With ``k``, ALBEF's pruning: only the
``k`` answers whose first token is likeliest after the question are scored in full (ALBEF: k=128),
the rest get -inf. Because the sum includes that first token, the pruned ranking agrees with the
full one whenever the best answer survives the pruning.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch.utils.data import DataLoader

from vlp.data.images import ImageTransform
from vlp.data.records import DataWarning
from vlp.data.tokenizer import TextTokenizer
from vlp.data.vqa import AnswerVocab, VQACollator, VQADataset, VQARecord, join_question_answer
from vlp.encoders import EncoderOutput
from vlp.metrics.vqa import VQAAccuracy, vqa_accuracy
from vlp.models import ImageTextModel
from vlp.objectives.lm import lm_labels
from vlp.objectives.mlm import IGNORE_INDEX
from vlp.tasks.vqa import VQATask, answer_mode

__all__ = ["answer_vqa", "evaluate_vqa", "first_token_log_probs", "predict_vqa", "rank_answers", "score_answers"]

Method = Literal["classifier", "rank", "generate"]


def _decode_log_probs(model: ImageTextModel, image: EncoderOutput, ids: torch.Tensor, mask: torch.Tensor, prefix: torch.Tensor, mode: str) -> torch.Tensor:
    decoded = model.decode(image, ids, mask, mode=mode, prefix_length=prefix if mode == "seq2seq" else None)
    return torch.log_softmax(model.lm_logits(decoded).float(), dim=-1)


@torch.no_grad()
def score_answers(
    model: ImageTextModel,
    image: EncoderOutput,
    question_ids: torch.Tensor,
    question_mask: torch.Tensor,
    answer_ids: torch.Tensor,
    answer_mask: torch.Tensor,
    question_index: torch.Tensor,
    answer_index: torch.Tensor,
    *,
    chunk: int = 256,
    pad_id: int = 0,
) -> torch.Tensor:
    """[R] summed log-likelihood of answer ``answer_index[r]`` after question ``question_index[r]``.

    ``image`` holds the fusion-side image features of the questions (one row per question);
    questions and answers are ``encode_batch`` rows. Computed in chunks of ``chunk`` rows; padding
    (``pad_id``) is masked out of attention and scores, so its value does not matter.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    mode = answer_mode(model)
    scores = []
    for start in range(0, question_index.shape[0], chunk):
        q, a = question_index[start : start + chunk], answer_index[start : start + chunk]
        ids, mask, prefix = join_question_answer(question_ids[q], question_mask[q], answer_ids[a], answer_mask[a], pad_id)
        log_probs = _decode_log_probs(model, image.select(q), ids, mask, prefix, mode)[:, :-1]  # position t predicts t+1
        labels = lm_labels(ids, mask, prefix)  # answer tokens only
        picked = log_probs.gather(-1, labels.clamp_min(0)[..., None])[..., 0]
        scores.append(picked.masked_fill(labels == IGNORE_INDEX, 0.0).sum(dim=1))
    return torch.cat(scores) if scores else torch.zeros(0)


@torch.no_grad()
def first_token_log_probs(
    model: ImageTextModel, image: EncoderOutput, question_ids: torch.Tensor, question_mask: torch.Tensor, answer_ids: torch.Tensor
) -> torch.Tensor:
    """[B, C] log p(first token of answer c | image, question b): ALBEF's pruning score."""
    prefix = question_mask.sum(1)
    log_probs = _decode_log_probs(model, image, question_ids, question_mask, prefix, answer_mode(model))
    last = log_probs[torch.arange(question_ids.shape[0], device=log_probs.device), prefix - 1]  # [B, V]
    return last[:, answer_ids[:, 1]]  # column 0 is [CLS]


@torch.no_grad()
def rank_answers(
    model: ImageTextModel,
    image_input: Any,
    question_ids: torch.Tensor,
    question_mask: torch.Tensor,
    answer_ids: torch.Tensor,
    answer_mask: torch.Tensor,
    *,
    k: int | None = None,
    candidates: torch.Tensor | None = None,
    chunk: int = 256,
) -> torch.Tensor:
    """[B, C] scores of every answer for every question; -inf where an answer was pruned.

    ``candidates`` [B, K] (answer indices, e.g. a classifier's top K) restricts scoring; otherwise
    ``k`` prunes by first-token likelihood; otherwise every answer is scored.
    """
    n_questions, n_answers = question_ids.shape[0], answer_ids.shape[0]
    image = model.pair_features(image_input, question_ids, question_mask, unimodal=False).image_for_fusion
    if candidates is None and k is not None and k < n_answers:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        candidates = first_token_log_probs(model, image, question_ids, question_mask, answer_ids).topk(k, dim=1).indices
    device = question_ids.device
    if candidates is None:
        candidates = torch.arange(n_answers, device=device).expand(n_questions, n_answers)
    question_index = torch.arange(n_questions, device=device)[:, None].expand_as(candidates).reshape(-1)
    flat = score_answers(model, image, question_ids, question_mask, answer_ids, answer_mask, question_index, candidates.reshape(-1), chunk=chunk)
    scores = torch.full((n_questions, n_answers), float("-inf"), device=flat.device)
    return scores.scatter(1, candidates.to(flat.device), flat.view(candidates.shape))


def _split(predictor: ImageTextModel | VQATask, method: Method) -> tuple[ImageTextModel, VQATask | None]:
    if method not in ("classifier", "rank", "generate"):
        raise ValueError(f"method must be 'classifier', 'rank' or 'generate', got {method!r}")
    task = predictor if isinstance(predictor, VQATask) else None
    if method == "classifier" and task is None:
        raise ValueError("method='classifier' needs the fine-tuned VQATask (it owns the answer head)")
    return (task.model if task is not None else predictor), task  # type: ignore[return-value]


@torch.no_grad()
def answer_vqa(
    predictor: ImageTextModel | VQATask,
    image_input: Any,
    question_ids: torch.Tensor,
    question_mask: torch.Tensor,
    vocab: AnswerVocab,
    *,
    method: Method = "classifier",
    answer_tokens: tuple[torch.Tensor, torch.Tensor] | None = None,
    k: int | None = None,
    chunk: int = 256,
) -> list[str]:
    """The best vocabulary answer per question of one batch.

    ``classifier``: argmax of a ``VQATask``'s head. ``rank``: ``rank_answers`` with the model's LM
    (``answer_tokens`` = ``tokenizer.encode_batch(vocab.answers, ...)``, encoded once by the caller).
    """
    model, task = _split(predictor, method)
    if method == "classifier":
        assert task is not None
        logits = task.logits(image_input, question_ids, question_mask)
        if logits.shape[1] != len(vocab):
            raise ValueError(f"the head has {logits.shape[1]} answers, the vocabulary {len(vocab)}")
        best = logits.argmax(dim=1)
    else:
        if answer_tokens is None:
            raise ValueError("method='rank' needs answer_tokens (the tokenised vocabulary)")
        best = rank_answers(model, image_input, question_ids, question_mask, *answer_tokens, k=k, chunk=chunk).argmax(dim=1)
    return [vocab.answers[i] for i in best.tolist()]


@torch.no_grad()
def predict_vqa(
    predictor: ImageTextModel | VQATask,
    records: Sequence[VQARecord],
    tokenizer: TextTokenizer,
    vocab: AnswerVocab,
    *,
    image_size: int,
    max_length: int,
    method: Method = "classifier",
    batch_size: int = 64,
    answer_length: int = 16,
    k: int | None = None,
    chunk: int = 256,
    transform: Callable[[Any], torch.Tensor] | None = None,
) -> dict[int, str]:
    """question id -> predicted answer for ``records``, in eval mode (restored afterwards).

    ``max_length`` is the model's text length: for ranking, questions are cut so that the
    question and the longest answer fit in it together.

    Questions whose image is corrupt get the empty answer (scored 0) and one ``DataWarning``.
    """
    model, _ = _split(predictor, method)
    device = next(model.parameters()).device
    answer_tokens, question_length = None, max_length
    if method == "rank":
        ids, mask = tokenizer.encode_batch(list(vocab.answers), answer_length)
        answer_tokens = (ids.to(device), mask.to(device))
        question_length = max_length - ids.shape[1] + 1  # room for "answer [SEP]" within max_length
    elif method == "generate":  # open vocabulary: decode "answer [SEP]" after the question
        from vlp.generation import GenerationConfig, generate

        mode = "seq2seq" if answer_mode(model) == "seq2seq" else "causal"
        generation = GenerationConfig.for_tokenizer(tokenizer, max_new_tokens=answer_length, prompt_mode=mode)
        question_length = max_length - answer_length + 1
    dataset = VQADataset(records, transform or ImageTransform(image_size))
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=VQACollator(tokenizer, question_length))
    was_training = predictor.training
    predictor.eval()
    predictions: dict[int, str] = {}
    try:
        for batch in loader:
            if len(batch) == 0:
                continue
            batch = batch.to(device)
            if method == "generate":
                out = generate(model, batch.image_input, generation, prompt_ids=batch.input_ids, prompt_mask=batch.attention_mask)
                answers = [tokenizer.decode(row) for row in out.sequences.tolist()]
            else:
                answers = answer_vqa(
                    predictor, batch.image_input, batch.input_ids, batch.attention_mask, vocab, method=method,
                    answer_tokens=answer_tokens, k=k, chunk=chunk,
                )
            predictions.update(zip(batch.question_ids.tolist(), answers))  # type: ignore[union-attr]
    finally:
        predictor.train(was_training)
    missing = [r.question_id for r in records if r.question_id not in predictions]
    if missing:
        warnings.warn(f"{len(missing)} question(s) had unreadable images and get an empty answer", DataWarning, stacklevel=2)
        predictions.update({q: "" for q in missing})
    return predictions


def evaluate_vqa(
    predictor: ImageTextModel | VQATask,
    records: Sequence[VQARecord],
    tokenizer: TextTokenizer,
    vocab: AnswerVocab,
    *,
    reference_normalization: Literal["official", "full"] = "official",
    **kwargs: Any,
) -> VQAAccuracy:
    """VQA accuracy (overall, per answer type, per question type) of ``predict_vqa``'s answers
    (``kwargs`` go to ``predict_vqa``: image_size, max_length, method, batch_size, k...)."""
    predictions = predict_vqa(predictor, records, tokenizer, vocab, **kwargs)
    return vqa_accuracy(predictions, records, reference_normalization=reference_normalization)
