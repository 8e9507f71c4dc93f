"""Smoke run: fine-tune a tiny ALBEF (from scratch) as a VQA classifier on scenes, against a prior.

Trains ``VQATask`` on the ``albef_tiny`` model with the library's ``Trainer`` for ``--steps`` steps
on the scenes VQA train split (32-pixel images), then reports VQA accuracy on the test split,
overall and per question type, next to the "question-type prior" baseline: for each question type,
always answer the most common training answer of that type. The model must look at the image to
beat the prior on count, colour and shape questions.

    .venv/bin/python benchmarks/vqa_smoke.py --steps 110 --lr 3e-3 --train-images 2000 [--out runs/vqa_smoke]

Recorded 2026-11-28 with that command (a tiny smoke run on a shared 2-core CPU under heavy load:
219 s of training, 110 steps x 32 = 0.44 epoch of 8,000 questions; 25 answers cover 100 % of the
1,000 test questions; "official" and "full" reference normalisation gave identical numbers).
VQA accuracy %, model / question-type prior:

    overall 33.96 / 36.98   yes/no 53.11 / 56.24   number 44.48 / 44.48   other 7.16 / 12.45
    how many 44.48 / 44.48   what color is the 0.00 / 15.65   what shape is the 15.25 / 11.54
    what shape is 3.25 / 3.25   is the 53.80 / 53.80   is there a 57.78 / 51.75

At this length the model has learned the answer-type prior (yes for yes/no, 1 for counts, a
shape for "what ... is the") but not yet to read the image or to tell colour from shape
questions; it answers "diamond" to every colour question. Longer training is needed for a
meaningful comparison.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

from vlp.adapt.vqa import evaluate_vqa
from vlp.data.images import ImageTransform
from vlp.data.scenes import generate_scenes, scenes_are_cached
from vlp.data.tokenizer import TextTokenizer
from vlp.data.vqa import AnswerVocab, VQACollator, VQADataset, VQARecord, read_scenes_vqa
from vlp.metrics.vqa import VQAAccuracy, normalize_answer, vqa_accuracy
from vlp.models import build_model, model_preset
from vlp.tasks.vqa import VQATask
from vlp.train.config import TrainConfig
from vlp.train.trainer import Trainer, seed_everything


def prior_baseline(train: list[VQARecord], test: list[VQARecord], references: str) -> VQAAccuracy:
    by_type: dict[str, Counter[str]] = defaultdict(Counter)
    for r in train:
        by_type[r.question_type][normalize_answer(r.multiple_choice_answer)] += 1
    overall = Counter(normalize_answer(r.multiple_choice_answer) for r in train).most_common(1)[0][0]
    guess = {r.question_id: (by_type[r.question_type].most_common(1)[0][0] if r.question_type in by_type else overall) for r in test}
    return vqa_accuracy(guess, test, reference_normalization=references)  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=110)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--train-images", type=int, default=2000)
    parser.add_argument("--answers", type=int, default=32)
    parser.add_argument("--data", default="data/scenes_vqa_smoke")
    parser.add_argument("--out", default="runs/vqa_smoke")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    scenes = dict(seed=0, image_size=32, num_train=args.train_images, num_val=16, num_test=250, num_test_novel=16)
    if not scenes_are_cached(args.data, **scenes):
        generate_scenes(args.data, **scenes)
    train, test = read_scenes_vqa(args.data, "train"), read_scenes_vqa(args.data, "test")
    tok = TextTokenizer.train_wordpiece([r.question for r in train], vocab_size=200)
    vocab = AnswerVocab.from_records(train, size=args.answers)
    seed_everything(args.seed)
    cfg = model_preset("albef_tiny")
    model = build_model(replace(cfg, text_encoder=replace(cfg.text_encoder, vocab_size=tok.vocab_size)))
    task = VQATask(model, len(vocab))
    max_length = cfg.text_encoder.max_length
    train_cfg = TrainConfig(
        batch_size=args.batch_size, max_steps=args.steps, lr=args.lr, warmup_steps=min(20, args.steps), weight_decay=0.01,
        device="cpu", seed=args.seed, num_workers=0, log_every=50, checkpoint_every=args.steps, tensorboard=False,
    )
    dataset = VQADataset(train, ImageTransform(32), vocab)
    trainer = Trainer(task, dataset, VQACollator(tok, max_length, num_answers=len(vocab)), train_cfg, Path(args.out), metadata={"answers": list(vocab.answers)})
    began = time.perf_counter()
    trainer.fit()
    seconds = time.perf_counter() - began

    rows = {}
    for references in ("official", "full"):
        model_acc = evaluate_vqa(task, test, tok, vocab, method="classifier", image_size=32, max_length=max_length, reference_normalization=references)  # type: ignore[arg-type]
        rows[references] = {"model": model_acc.as_percent(), "prior": prior_baseline(train, test, references).as_percent()}
    report = {
        "steps": args.steps, "batch_size": args.batch_size, "train_questions": len(train), "test_questions": len(test),
        "answers": len(vocab), "answer_coverage_test": round(vocab.coverage(test), 4), "train_seconds": round(seconds, 1),
        "accuracy": rows,
    }
    print(json.dumps(report, indent=2))
    (Path(args.out) / "vqa_smoke.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
