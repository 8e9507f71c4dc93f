"""Turn an ExperimentConfig into data records, a tokenizer, a model and a task.

Kept apart from the CLI so notebooks and tests can build exactly what `vlp train` builds.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

from vlp.data.datasets import CaptionPairDataset, PairCollator
from vlp.data.formats import FormatOptions, read_records
from vlp.data.images import ImageTransform
from vlp.data.readers import read_karpathy
from vlp.data.records import ImageRecord
from vlp.data.tokenizer import TextTokenizer
from vlp.experiment.config import DataConfig, ExperimentConfig, with_vocab_size
from vlp.models import build_model
from vlp.tasks import PretrainTask
from vlp.train.trainer import seed_everything


def ensure_scenes(data: DataConfig, progress=print) -> Path:
    """Generate the scenes dataset into data.path unless an identical one is cached there."""
    from vlp.data.scenes import generate_scenes, scenes_are_cached

    out = Path(data.path)
    params = asdict(data.scenes)
    if scenes_are_cached(out, **params):
        progress(f"[data] using cached scenes in {out}")
        return out
    progress(f"[data] generating scenes into {out} ({params})")
    generate_scenes(out, progress=progress, **params)
    return out


def dataset_json(data: DataConfig) -> Path:
    if data.format == "scenes":
        return Path(data.path) / "dataset_coco.json"
    return Path(data.path)


def load_records(data: DataConfig, splits: list[str] | tuple[str, ...]) -> dict[str, list[ImageRecord]]:
    """Records per split: read once from the Karpathy JSON (scenes are written in that format) or the
    file of another format, or once per split when data.path holds a "{split}" pattern."""
    path = dataset_json(data)
    if data.format == "wds":
        return {data.train_split: wds_records(data, splits)}
    if data.format in ("scenes", "karpathy"):
        records = read_karpathy(path, image_root=data.image_root, splits=set(splits))
    else:
        options = FormatOptions(
            image_root=data.image_root, csv_image_key=data.csv_image_key, csv_caption_key=data.csv_caption_key,
            separator=data.separator, split_key=data.split_key, image_key=data.image_key, split_dirs=data.split_dirs,
        )
        if "{split}" in data.path:
            records = [r for s in splits for r in read_records(data.format, data.path.format(split=s), replace(options, split=s), [s])]
        else:
            records = read_records(data.format, path, options, set(splits))
    by_split: dict[str, list[ImageRecord]] = {s: [] for s in splits}
    for record in records:
        by_split.setdefault(record.split, []).append(record)
    for split in splits:
        if not by_split[split]:
            hint = "" if data.format in ("scenes", "karpathy") or "{split}" in data.path else (
                f"; {data.format} entries without a split are {FormatOptions.split!r}: give the file a split column "
                "(csv/tsv split_key, jsonl \"split\") or put {split} in data.path (one file per split)"
            )
            raise ValueError(f"split {split!r} has no images in {path}{hint}")
    return by_split


def wds_records(data: DataConfig, splits: list[str] | tuple[str, ...]) -> list[ImageRecord]:
    """All samples of the shards as the one training split, for the tokenizer and the counts: the
    shards themselves are streamed (``WebDatasetStream``), so ``path`` is only the shard spec.
    This is one pass over the shards, reading every image's bytes but decoding none."""
    from vlp.data.formats.wds import read_wds

    others = [s for s in splits if s != data.train_split]
    if others:
        raise ValueError(
            f"data.format=wds streams all shards as the training split {data.train_split!r}; split(s) {others} "
            "need another format: evaluate with data.format/data.path of an annotation file (e.g. karpathy)"
        )
    records = [
        ImageRecord(sample.image_id, Path(data.path), data.train_split, sample.captions)
        for sample in read_wds(data.path, split=data.train_split)
    ]
    if not records:
        raise ValueError(f"{data.path}: no captioned samples in the shards")
    return records


def build_tokenizer(data: DataConfig, train_records: list[ImageRecord]) -> TextTokenizer:
    if data.tokenizer:
        source = Path(data.tokenizer)
        if source.is_dir():
            return TextTokenizer.load(source)
        if source.suffix == ".txt":
            return TextTokenizer.from_vocab_txt(source)
        return TextTokenizer.from_file(source)
    captions = (caption for record in train_records for caption in record.captions)
    return TextTokenizer.train_wordpiece(captions, vocab_size=data.vocab_size)


def image_size_of(cfg: ExperimentConfig) -> int:
    return int(getattr(cfg.model.image_encoder, "image_size", 0))


def uses_regions(cfg: ExperimentConfig) -> bool:
    return cfg.model.image_encoder.kind == "region"


def region_reader(cfg: ExperimentConfig, splits: list[str] | tuple[str, ...], progress=print):
    """The region feature file of the experiment, extracted once (and cached) for scenes data."""
    from vlp.data.region_data import extract_scene_regions
    from vlp.data.regions import RegionFeatureReader

    data = cfg.data
    if data.regions:
        path = Path(data.regions)
    elif data.format == "scenes":
        path = Path(data.path) / f"regions_{data.region_backbone}_s{data.region_stages}_{'_'.join(sorted(splits))}.safetensors"
        if not path.is_file():
            progress(f"[data] extracting region features ({data.region_backbone}, {data.region_stages} stages) into {path}")
            extract_scene_regions(
                data.path, path, list(splits), backbone=data.region_backbone, stages=data.region_stages,
                weights_path=data.region_weights, seed=data.scenes.seed,
            )
    else:
        raise ValueError("region models need data.regions: a vlp-regions-1 feature file (see vlp.data.regions)")
    reader = RegionFeatureReader(path)
    expected = getattr(cfg.model.image_encoder, "feature_dim", None)
    if reader.feature_dim != expected:
        raise ValueError(
            f"{path} holds {reader.feature_dim}-d region features but model.image_encoder.feature_dim={expected}"
        )
    return reader


def tags_of(cfg: ExperimentConfig, splits: list[str] | tuple[str, ...]) -> dict[int, str] | None:
    if not cfg.data.object_tags:
        return None
    if cfg.data.format != "scenes":
        raise ValueError("data.object_tags needs COCO-format object annotations (scenes ship them)")
    from vlp.data.region_data import object_tags

    tags: dict[int, str] = {}
    for split in splits:
        tags.update(object_tags(Path(cfg.data.path) / f"objects_{split}.json"))
    return tags


def build_training(cfg: ExperimentConfig, records: list[ImageRecord], tokenizer: TextTokenizer) -> tuple[ExperimentConfig, PretrainTask, CaptionPairDataset, PairCollator]:
    """Seeded model + task + dataset for the training split; returns the resolved config too."""
    resolved = with_vocab_size(cfg, tokenizer.vocab_size)
    seed_everything(cfg.train.seed)
    task = build_task(resolved)
    objectives = resolved.objectives
    masking = {"mlm_rate": objectives.mlm_rate, "whole_word": objectives.whole_word_mask, "seed": objectives.seed} if objectives.needs_mlm_masks else {}
    max_length = resolved.model.text_encoder.max_length
    if uses_regions(resolved):
        if cfg.data.format == "wds":
            raise ValueError("region models need data.regions features of an annotation-file dataset, not data.format=wds shards")
        from vlp.data.region_data import RegionCaptionPairDataset, RegionPairCollator

        split = [cfg.data.train_split]
        tags = tags_of(resolved, split)
        dataset = RegionCaptionPairDataset(records, region_reader(resolved, split), tags=tags)
        collate = RegionPairCollator(tokenizer, max_length, use_tags=tags is not None, **masking)
    elif cfg.data.format == "wds":
        from vlp.data.formats.wds_stream import WebDatasetStream

        # rank 0 of 1 here: the Trainer moves the stream to its rank (set_rank) before iterating
        dataset = WebDatasetStream(
            cfg.data.path, ImageTransform(image_size_of(resolved)), cfg.train.batch_size, seed=cfg.train.seed,
            shuffle_buffer=cfg.data.shuffle_buffer,
        )
        collate = PairCollator(tokenizer, max_length=max_length, **masking)
    else:
        dataset = CaptionPairDataset(records, ImageTransform(image_size_of(resolved)))
        collate = PairCollator(tokenizer, max_length=max_length, **masking)
    return resolved, task, dataset, collate


def build_task(cfg: ExperimentConfig) -> PretrainTask:
    """The task (model + objectives) of a resolved config. Checkpoints hold the task's state, so
    evaluation builds the same task and loads into it before taking `task.model`."""
    return PretrainTask(build_model(cfg.model), cfg.objectives)
