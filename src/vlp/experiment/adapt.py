"""Adapting a pre-trained run to a downstream task, and measuring it: the one-call API behind
`vlp finetune TASK` and `vlp evaluate TASK`.

Fine-tuning starts from a run directory (its config, tokenizer and newest valid checkpoint) and
writes a new run directory of the same layout, so every evaluation reads any run the same way:

* retrieval  -- the pre-training loop with ITC (+ ITM where the model has a fusion module);
* captioning -- the pre-training loop with LM only (seq2seq MLM for a unified model without LM head);
* vqa        -- a classifier over the training answers (VQATask); the answer vocabulary is saved as
                ``answers.json`` next to the checkpoints; or (``--generative``) the LM loss on the
                answer after the question, for ``vlp evaluate vqa --method rank`` (ranking the
                answer list with the decoder) or ``--method generate`` (open vocabulary).

Evaluations: retrieval (ITC ranking, ITM re-ranking of the top k), captioning (decoding +
BLEU/ROUGE-L/CIDEr-D), vqa (official accuracy per type), zeroshot (scenes "which shape/colour").
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.data import DataLoader

from vlp.config import to_dict
from vlp.data.images import ImageTransform
from vlp.data.records import ImageRecord
from vlp.data.tokenizer import TextTokenizer
from vlp.experiment.build import build_task, dataset_json, ensure_scenes, image_size_of, load_records
from vlp.experiment.config import ExperimentConfig
from vlp.experiment.foils import pixel_loader
from vlp.models import ImageTextModel
from vlp.train import Trainer, TrainResult, load_model_weights, resolve_device
from vlp.train.checkpoint import find_resumable, write_text_atomic

FinetuneTask = Literal["retrieval", "captioning", "vqa"]
EvalTask = Literal["retrieval", "captioning", "vqa", "zeroshot"]
ANSWER_LENGTH = 8  # tokens of "answer [SEP]" in generative VQA fine-tuning
FINETUNE_TASKS: tuple[str, ...] = ("retrieval", "captioning", "vqa")
EVAL_TASKS: tuple[str, ...] = ("retrieval", "captioning", "vqa", "zeroshot")


def finetune_objectives(task: str, cfg: ExperimentConfig) -> ExperimentConfig:
    """The experiment's objectives for a downstream task: only the task's losses keep a weight.
    Momentum/queue settings stay as pre-trained so the checkpoint (with its momentum copy) still fits."""
    model = cfg.model
    off = {name: 0.0 for name in ("itc", "itm", "mlm", "seq2seq_mlm", "lm", "prefix_lm")}
    if task == "retrieval":
        if not model.contrastive and not model.heads.itm:
            raise ValueError("retrieval fine-tuning needs a contrastive head or an ITM head")
        weights = {**off, "itc": 1.0 if model.contrastive else 0.0, "itm": 1.0 if model.heads.itm else 0.0}
    elif task == "captioning":
        if model.heads.lm:
            weights = {**off, "lm": 1.0}
        elif model.heads.mlm and model.fusion.kind in ("unified", "unified_seq2seq"):
            weights = {**off, "seq2seq_mlm": 1.0}
        else:
            raise ValueError("captioning fine-tuning needs an LM head (or a unified model's seq2seq MLM)")
    else:
        raise ValueError(f"unknown fine-tuning task {task!r}; expected one of {FINETUNE_TASKS}")
    objectives = replace(cfg.objectives, **weights)
    if not weights["itc"]:
        objectives = replace(objectives, distill_alpha=0.0)  # distillation softens ITC targets only
    return replace(cfg, objectives=objectives)


def run_model(run_dir: Path, checkpoint: Path | None = None) -> tuple[ExperimentConfig, TextTokenizer, Path]:
    from vlp.experiment.run import load_run_config

    cfg = load_run_config(run_dir)
    tokenizer = TextTokenizer.load(run_dir / "tokenizer")
    checkpoint = checkpoint or find_resumable(run_dir / "checkpoints")
    if checkpoint is None:
        raise FileNotFoundError(f"no usable checkpoint under {run_dir / 'checkpoints'}")
    return cfg, tokenizer, checkpoint


def finetune(
    task: str, init_from: Path, run_dir: Path, overrides: list[str] | None = None, answers: int = 1000,
    generative: bool = False, log=print,
) -> TrainResult:
    """Fine-tune the model of run ``init_from`` for ``task``; ``overrides`` are dotted ``key=value``
    settings applied to the pre-training run's config (e.g. ``train.max_steps=300``); ``answers``
    caps the VQA answer vocabulary (the most frequent normalised training answers); ``generative``
    fine-tunes VQA as answer generation after the question (LM loss on the answer tokens, for
    ``vlp evaluate vqa --method rank``) instead of the classifier."""
    from vlp.config import apply_overrides
    from vlp.experiment.run import train_experiment

    base, _, checkpoint = run_model(Path(init_from))
    cfg = replace(base, name=f"{base.name}_{task}", init_from=str(checkpoint))
    if task == "vqa":
        return _finetune_vqa(apply_overrides(cfg, overrides or []), checkpoint, Path(run_dir), answers, generative, log)
    cfg = apply_overrides(finetune_objectives(task, cfg), overrides or [])
    return train_experiment(cfg, Path(run_dir), log=log)


# ---------------------------------------------------------------------------------------- VQA
def vqa_records(cfg: ExperimentConfig, split: str):
    """VQAv2 question/annotation files of a split: ``<data root>/vqa/{questions,annotations}_<split>.json``
    (the scenes layout; any VQAv2 pair of files placed there works). Images are found by image id in
    the experiment's caption dataset (Karpathy JSON), or by COCO file naming."""
    from vlp.data.vqa import read_vqa

    root = dataset_json(cfg.data).parent
    questions, annotations = root / "vqa" / f"questions_{split}.json", root / "vqa" / f"annotations_{split}.json"
    if not questions.is_file():
        raise FileNotFoundError(f"no VQA questions for split {split!r}: {questions}")
    paths = {r.image_id: r.path for records in load_records(cfg.data, [split]).values() for r in records}
    return read_vqa(questions, annotations if annotations.is_file() else None, image_root=cfg.data.image_root or root, image_paths=paths)


def _finetune_vqa(cfg: ExperimentConfig, checkpoint: Path, run_dir: Path, answers: int, generative: bool, log) -> TrainResult:
    from vlp.data.vqa import AnswerVocab, VQACollator, VQADataset
    from vlp.experiment.run import save_config
    from vlp.tasks.vqa import VQAGenerativeTask, VQATask

    if cfg.data.format == "scenes":
        ensure_scenes(cfg.data, progress=log)
    records = vqa_records(cfg, cfg.data.train_split)
    vocab = AnswerVocab.from_records(records, size=answers)
    tokenizer = TextTokenizer.load(checkpoint.parent.parent / "tokenizer")
    pretrained = build_task(cfg)
    load_model_weights(checkpoint, pretrained)
    if generative:
        if pretrained.model.lm_head is None:
            raise ValueError("generative VQA fine-tuning needs a model with an LM head (heads.lm)")
        task: VQATask | VQAGenerativeTask = VQAGenerativeTask(pretrained.model)
        # the run holds the bare model (no momentum copy): evaluation rebuilds it from this config
        cfg = replace(cfg, objectives=replace(cfg.objectives, queue_size=0, distill_alpha=0.0))
    else:
        task = VQATask(pretrained.model, len(vocab))
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir)
    tokenizer.save(run_dir / "tokenizer")
    vocab.save(run_dir / "answers.json")
    write_text_atomic(run_dir / "vqa.json", json.dumps({"mode": "generative" if generative else "classifier"}))
    log(f"[vqa] {len(records)} questions, {len(vocab)} answers (coverage {100 * vocab.coverage(records):.1f} %), from {checkpoint}")
    dataset = VQADataset(records, ImageTransform(image_size_of(cfg)), vocab)
    max_length = cfg.model.text_encoder.max_length
    collate = VQACollator(tokenizer, max_length, answer_length=ANSWER_LENGTH) if generative else VQACollator(tokenizer, max_length, num_answers=len(vocab))
    trainer = Trainer(task, dataset, collate, cfg.train, run_dir, metadata={"config": to_dict(cfg), "task": "vqa"})
    return trainer.fit()


def vqa_mode(run_dir: Path) -> str | None:
    """"classifier" or "generative" for a VQA fine-tuning run, None for any other run."""
    path = Path(run_dir) / "vqa.json"
    return json.loads(path.read_text(encoding="utf-8"))["mode"] if path.is_file() else None


def load_vqa_predictor(run_dir: Path, checkpoint: Path | None = None):
    """(config, tokenizer, answer vocabulary, VQATask / VQAGenerativeTask in eval mode) of a VQA run."""
    from vlp.data.vqa import AnswerVocab
    from vlp.tasks.vqa import VQAGenerativeTask, VQATask

    cfg, tokenizer, checkpoint = run_model(run_dir, checkpoint)
    vocab = AnswerVocab.load(run_dir / "answers.json")
    model = build_task(cfg).model
    task = VQAGenerativeTask(model) if vqa_mode(run_dir) == "generative" else VQATask(model, len(vocab))
    load_model_weights(checkpoint, task)
    return cfg, tokenizer, vocab, task.eval()


# ---------------------------------------------------------------------------------------- captioning
@torch.no_grad()
def caption_images(
    model: ImageTextModel, tokenizer: TextTokenizer, records: list[ImageRecord], image_size: int,
    generation: Any, batch_size: int = 64, device: torch.device | str = "cpu",
) -> dict[int, str]:
    """image id -> generated caption (batched decoding; unreadable images are left out)."""
    from vlp.generation import generate

    model.eval()
    captions: dict[int, str] = {}
    for pixels, image_ids, _ in pixel_loader(records, image_size, batch_size):
        if len(image_ids) == 0:
            continue
        out = generate(model, pixels.to(device), generation)
        for image_id, row in zip(image_ids.tolist(), out.sequences.tolist()):
            captions[int(image_id)] = tokenizer.decode(row)
    return captions


def evaluate_captioning(
    model: ImageTextModel, tokenizer: TextTokenizer, records: list[ImageRecord], image_size: int,
    strategy: str = "beam", num_beams: int = 3, max_new_tokens: int = 30, batch_size: int = 64,
    device: torch.device | str = "cpu",
) -> tuple[dict[str, float], dict[int, str]]:
    from vlp.generation import GenerationConfig
    from vlp.metrics.caption import evaluate_captions

    generation = GenerationConfig.for_tokenizer(
        tokenizer, strategy=strategy, num_beams=num_beams if strategy == "beam" else 1, max_new_tokens=max_new_tokens,
    )
    predictions = caption_images(model, tokenizer, records, image_size, generation, batch_size, device)
    references = {r.image_id: list(r.captions) for r in records if r.image_id in predictions}
    metrics = evaluate_captions(predictions, references, metrics=("bleu", "rouge", "cider"))
    return {k: 100.0 * v for k, v in metrics.items()}, predictions


# ---------------------------------------------------------------------------------------- dispatch
def evaluate_task(
    task: str, run_dir: Path, splits: list[str] | None = None, *, k_test: int | None = 16, method: str = "classifier",
    num_beams: int = 3, answers: int = 1000, device: str = "auto", log=print,
) -> dict[str, dict[str, float]]:
    """Evaluate run ``run_dir`` on ``task`` for each split; results also go to ``eval_<task>.json``."""
    from vlp.experiment.run import load_trained_model

    if task not in EVAL_TASKS:
        raise ValueError(f"unknown evaluation task {task!r}; expected one of {EVAL_TASKS}")
    run_dir = Path(run_dir)
    target = resolve_device(device)
    results: dict[str, dict[str, float]] = {}
    mode = vqa_mode(run_dir)
    if task == "vqa" and method == "classifier" and mode != "classifier":
        raise ValueError(f"{run_dir} has no VQA classifier: fine-tune one with `vlp finetune vqa`, or use --method rank")
    if mode is not None:
        cfg, tokenizer, vocab, vqa_task = load_vqa_predictor(run_dir)
        model = vqa_task.to(target).model  # the task, so a classifier head moves with the model
        predictor = vqa_task if mode == "classifier" else model
    else:
        cfg, tokenizer, model = load_trained_model(run_dir)
        predictor = model.to(target)
    if task == "vqa" and mode is None:  # ranking / generation on a non-VQA run: the training answers
        from vlp.data.vqa import AnswerVocab

        vocab = AnswerVocab.from_records(vqa_records(cfg, cfg.data.train_split), size=answers)
    splits = splits or list(cfg.data.eval_splits)
    size, max_length = image_size_of(cfg), cfg.model.text_encoder.max_length
    for split in splits:
        if task == "retrieval":
            from vlp.experiment.evaluate import evaluate_retrieval

            records = load_records(cfg.data, [split])[split]
            k = k_test if (model.itm_head is not None and model.cfg.contrastive) else None
            results[split] = evaluate_retrieval(model, records, tokenizer, size, max_length, k_test=k, device=target)
        elif task == "captioning":
            records = load_records(cfg.data, [split])[split]
            results[split], predictions = evaluate_captioning(model, tokenizer, records, size, num_beams=num_beams, device=target)
            write_text_atomic(run_dir / f"captions_{split}.json", json.dumps({str(k): v for k, v in predictions.items()}, indent=1))
        elif task == "vqa":
            from vlp.adapt.vqa import evaluate_vqa

            extra = {"answer_length": ANSWER_LENGTH} if method == "generate" else {}  # questions cut as in fine-tuning
            accuracy = evaluate_vqa(predictor, vqa_records(cfg, split), tokenizer, vocab, image_size=size, max_length=max_length, method=method, **extra)  # type: ignore[arg-type]
            results[split] = _flatten_vqa(accuracy.as_percent())
        else:
            from vlp.adapt.zeroshot import scenes_zero_shot

            if cfg.data.format != "scenes":
                raise ValueError("the zero-shot benchmarks are built from the scenes dataset's object annotations")
            results[split] = scenes_zero_shot(model, tokenizer, Path(cfg.data.path), split, size, max_length, device=target)
        log(f"[eval] {task} {split}: " + ", ".join(f"{k}={v:.2f}" for k, v in results[split].items() if isinstance(v, float)))
    write_text_atomic(run_dir / f"eval_{task}.json", json.dumps(results, indent=2))
    return results


def _flatten_vqa(accuracy: dict[str, Any]) -> dict[str, float]:
    flat: dict[str, float] = {}
    for key, value in accuracy.items():
        if isinstance(value, dict):
            flat.update({f"{key}/{k}": float(v) for k, v in value.items()})
        elif isinstance(value, (int, float)):
            flat[key] = float(value)
    return flat
