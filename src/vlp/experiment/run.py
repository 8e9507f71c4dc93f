"""Run-level operations shared by the CLI and the demo: train, evaluate, report.

A run directory holds everything needed to evaluate or resume without the original command line:
  config.yaml   the resolved experiment config (vocab size filled in)
  tokenizer/    the tokenizer the model was trained with
  checkpoints/  atomic safetensors checkpoints (see vlp.train.checkpoint)
  metrics.jsonl training log; eval.json evaluation results; report.html
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
import yaml

from vlp.config import ConfigError, from_dict, to_dict
from vlp.data.tokenizer import TextTokenizer
from vlp.experiment.build import build_task, build_tokenizer, build_training, dataset_json, region_reader, uses_regions, ensure_scenes, image_size_of, load_records
from vlp.experiment.foils import foil_binding_accuracy, foils_by_image, load_foils, pixel_loader
from vlp.experiment.config import ExperimentConfig, check_consistency
from vlp.experiment.evaluate import Gallery, embed_gallery, evaluate_gallery
from vlp.metrics import top_k_texts
from vlp.report import RetrievalExample, write_report
from vlp.train import Trainer, TrainResult, load_model_weights, resolve_device
from vlp.train.checkpoint import find_resumable, write_text_atomic
from vlp.train.distributed import DistributedContext, init_distributed
from vlp.train.logging import read_metrics

T = TypeVar("T")


def save_config(cfg: ExperimentConfig, run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))


def load_run_config(run_dir: Path) -> ExperimentConfig:
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a vlp run directory (no config.yaml)")
    return from_dict(ExperimentConfig, yaml.safe_load(path.read_text(encoding="utf-8")))


def _differences(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b))
        return [d for k in keys for d in _differences(a.get(k), b.get(k), f"{path}.{k}" if path else k)]
    return [] if a == b else [f"{path}: run has {a!r}, now {b!r}"]


def train_experiment(cfg: ExperimentConfig, run_dir: Path, resume: bool = False, log=print) -> TrainResult:
    """Prepare data and tokenizer, then train. With `resume`, the run's saved config and tokenizer are
    reused and a different requested config is an error (silently mixing two configs is not a resume).

    Under torchrun every rank runs this; rank 0 alone generates data, trains the tokenizer and writes
    the run directory, the other ranks wait and then read what it wrote."""
    ctx = init_distributed(cfg.train.device)
    try:
        return _train(cfg, run_dir, resume, log if ctx.is_main else (lambda *_: None), ctx)
    finally:
        ctx.close()


def _train(cfg: ExperimentConfig, run_dir: Path, resume: bool, log, ctx: DistributedContext) -> TrainResult:
    check_consistency(cfg)
    if cfg.data.format == "scenes":
        _main_first(ctx, lambda: ensure_scenes(cfg.data, progress=log))
    records = load_records(cfg.data, [cfg.data.train_split])[cfg.data.train_split]
    tokenizer_dir = run_dir / "tokenizer"
    init_checkpoint = _init_checkpoint(Path(cfg.init_from)) if cfg.init_from else None

    def tokenizer_for_run() -> TextTokenizer:
        if not ctx.is_main or (resume and tokenizer_dir.is_dir()):
            return TextTokenizer.load(tokenizer_dir)
        if init_checkpoint is not None and not cfg.data.tokenizer:
            # fine-tuning keeps the pre-trained vocabulary: new token ids would scramble the embeddings
            tokenizer = TextTokenizer.load(init_checkpoint.parent.parent / "tokenizer")
        else:
            tokenizer = build_tokenizer(cfg.data, records)
        tokenizer.save(tokenizer_dir)
        return tokenizer

    tokenizer = _main_first(ctx, tokenizer_for_run)
    resolved, task, dataset, collate = build_training(cfg, records, tokenizer)
    if init_checkpoint is not None and not resume:
        load_model_weights(init_checkpoint, task)
        log(f"[train] initialised from {init_checkpoint}")
    if resume and (run_dir / "config.yaml").is_file():
        differences = _differences(to_dict(load_run_config(run_dir)), to_dict(resolved))
        if differences:
            raise ConfigError("cannot resume with a different config:\n  " + "\n  ".join(differences))
    ctx.barrier()  # every rank has compared against the old config before rank 0 rewrites it
    if ctx.is_main:
        save_config(resolved, run_dir)
    params = sum(p.numel() for p in task.model.parameters())
    log(f"[train] {resolved.name}: {params / 1e6:.2f} M parameters, {len(records)} images, {len(dataset)} pairs, vocab {tokenizer.vocab_size}")
    trainer = Trainer(task, dataset, collate, resolved.train, run_dir, metadata={"config": to_dict(resolved)}, dist=ctx)
    return trainer.fit(resume=resume)


def _main_first(ctx: DistributedContext, fn: Callable[[], T]) -> T:
    """Rank 0 runs `fn` (writing files), the other ranks run it after (reading them)."""
    result = fn() if ctx.is_main else None
    ctx.barrier()
    return result if ctx.is_main else fn()  # type: ignore[return-value]


def _init_checkpoint(path: Path) -> Path:
    """Accept a run directory (newest valid checkpoint) or one checkpoint directory."""
    if (path / "state.json").is_file():
        return path
    found = find_resumable(path / "checkpoints")
    if found is None:
        raise FileNotFoundError(f"init_from={path}: no usable checkpoint there")
    return found


def load_trained_model(run_dir: Path, checkpoint: Path | None = None):
    """(config, tokenizer, model in eval mode) from a run directory's newest valid checkpoint."""
    cfg = load_run_config(run_dir)
    tokenizer = TextTokenizer.load(run_dir / "tokenizer")
    checkpoint = checkpoint or find_resumable(run_dir / "checkpoints")
    if checkpoint is None:
        raise FileNotFoundError(f"no usable checkpoint under {run_dir / 'checkpoints'}")
    task = build_task(cfg)
    load_model_weights(checkpoint, task)
    return cfg, tokenizer, task.model.eval()


def evaluate_run(
    run_dir: Path, splits: list[str] | None = None, checkpoint: Path | None = None, device: str = "auto", log=print
) -> tuple[dict[str, dict[str, float]], dict[str, Gallery]]:
    cfg, tokenizer, model = load_trained_model(run_dir, checkpoint)
    target = resolve_device(device)
    model.to(target)
    splits = splits or list(cfg.data.eval_splits)
    by_split = load_records(cfg.data, splits)
    results: dict[str, dict[str, float]] = {}
    galleries: dict[str, Gallery] = {}
    for split in splits:
        results[split] = {}
        if cfg.model.contrastive:
            gallery = embed_gallery(
                model, by_split[split], tokenizer, image_size_of(cfg), cfg.model.text_encoder.max_length,
                batch_size=cfg.eval.batch_size, device=target,
            )
            if gallery.skipped_images:
                log(f"[eval] warning: {gallery.skipped_images} unreadable images of split {split} left out")
            results[split].update(evaluate_gallery(gallery, ks=cfg.eval.ks, chunk_size=cfg.eval.chunk_size))
            galleries[split] = gallery
        else:
            log(f"[eval] {cfg.name} has no dual-encoder embeddings: dual-encoder retrieval skipped")
        foils_path = dataset_json(cfg.data).parent / f"foils_{split}.json"
        if foils_path.is_file():
            foils = load_foils(foils_path)
            foiled_ids = foils_by_image(foils).keys()
            wanted = [r for r in by_split[split] if r.image_id in foiled_ids]
            if uses_regions(cfg):
                from vlp.data.region_data import RegionImageCollator, RegionImageDataset

                dataset = RegionImageDataset(wanted, region_reader(cfg, [split], progress=log))
                images = torch.utils.data.DataLoader(dataset, batch_size=cfg.eval.batch_size, collate_fn=RegionImageCollator())
            else:
                images = pixel_loader(wanted, image_size_of(cfg), cfg.eval.batch_size)
            results[split].update(
                foil_binding_accuracy(model, tokenizer, images, foils, cfg.model.text_encoder.max_length, device=target)
            )
    write_text_atomic(run_dir / "eval.json", json.dumps(results, indent=2))
    return results, galleries


def retrieval_examples(gallery: Gallery, count: int, top: int = 5, seed: int = 0) -> list[RetrievalExample]:
    if count <= 0 or not gallery.records:
        return []
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randperm(len(gallery.records), generator=generator)[:count].tolist()
    best = top_k_texts(gallery.image_embeds[rows], gallery.text_embeds, k=min(top, len(gallery.captions)))
    examples = []
    for row, ranked in zip(rows, best.tolist()):
        record = gallery.records[row]
        examples.append(
            RetrievalExample(
                image_path=record.path,
                ranked_captions=[(gallery.captions[j], int(gallery.text_to_image[j]) == row) for j in ranked],
                true_captions=list(record.captions),
                title=f"{record.split} image {record.image_id}",
            )
        )
    return examples


def write_run_report(run_dir: Path, results: dict[str, dict[str, float]], galleries: dict[str, Gallery], notes: list[str] | None = None) -> Path:
    cfg = load_run_config(run_dir)
    points = [(int(r["step"]), float(r["loss"])) for r in read_metrics(run_dir) if "loss" in r]
    first_split = next(iter(galleries), None)
    examples = retrieval_examples(galleries[first_split], cfg.eval.num_examples) if first_split else []
    return write_report(run_dir / "report.html", f"vlp run: {cfg.name}", points, results, examples, notes)


def format_metrics_table(results: dict[str, dict[str, float]]) -> str:
    candidates = ["i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "r_mean", "itc_binding", "itm_binding"]
    columns = [c for c in candidates if any(c in values for values in results.values())]
    header = {"itc_binding": "itc_bind", "itm_binding": "itm_bind"}
    lines = [f"{'split':<12}" + "".join(f"{header.get(c, c):>9}" for c in columns) + f"{'images':>8}"]
    for split, values in results.items():
        lines.append(f"{split:<12}" + "".join(f"{values.get(c, float('nan')):>9.2f}" for c in columns) + f"{int(values.get('images', 0)):>8}")
    return "\n".join(lines)
