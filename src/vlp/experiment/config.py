"""Experiment = model + data + training + evaluation configs, and the named experiment presets.

An experiment YAML names a preset (`vlp.experiment.presets`) and overrides fields; `--set a.b=c`
overrides further. The resolved config is saved in the run directory and in every checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from vlp.models import ModelConfig
from vlp.tasks.pretrain import ObjectivesConfig
from vlp.train.config import TrainConfig


@dataclass
class ScenesConfig:
    """Parameters of the built-in scenes dataset (generated on first use, then cached)."""

    seed: int = 0
    image_size: int = 64
    num_train: int = 10000
    num_val: int = 500
    num_test: int = 1000
    num_test_novel: int = 1000


@dataclass
class DataConfig:
    format: Literal["scenes", "karpathy", "coco", "csv", "tsv", "jsonl", "folder", "wds"] = "scenes"
    # scenes: the directory to generate into / read from; karpathy: the dataset_coco.json file; coco, csv,
    # tsv, jsonl: the annotation file; folder: the image folder (see vlp.data.formats). A "{split}" in the
    # path means one file (or folder) per split, e.g. data/{split}.csv or captions_{split}.json.
    path: str = "data/scenes"
    image_root: str | None = None  # root of relative image paths (default: the annotation file's folder)
    csv_image_key: str = "filepath"  # csv/tsv image column (open_clip's --csv-img-key)
    csv_caption_key: str = "title"  # csv/tsv caption column (open_clip's --csv-caption-key)
    separator: str | None = None  # csv/tsv separator (default "," for csv, tab for tsv)
    split_key: str = "split"  # csv/tsv split column, used when the file has one
    image_key: str = "image"  # jsonl image field
    split_dirs: bool = False  # folder: the first directory level names the split
    shuffle_buffer: int = 1000  # wds: samples held by the streaming shuffle buffer (0 or 1: no mixing)
    train_split: str = "train"
    eval_splits: tuple[str, ...] = ("test", "test_novel")
    vocab_size: int = 1000  # WordPiece vocabulary trained on the training captions
    tokenizer: str | None = None  # or an existing vocab.txt / tokenizer.json / saved tokenizer directory
    scenes: ScenesConfig = field(default_factory=ScenesConfig)
    # Region-feature models (UNITER, OSCAR, LXMERT, VisualBERT, VLP): a `vlp-regions-1` file, or for
    # scenes None = extract once from the shipped boxes with a (randomly initialised, seeded) ResNet.
    regions: str | None = None
    region_backbone: str = "resnet18"
    region_stages: int = 3  # resnet18 at 3 stages: 256-d features
    region_weights: str | None = None  # local torchvision ResNet state dict for the extractor
    object_tags: bool = False  # OSCAR: detected object tags as a second text segment (scenes only)


@dataclass
class EvalConfig:
    batch_size: int = 256
    ks: tuple[int, ...] = (1, 5, 10)
    chunk_size: int = 1024  # rows of the similarity matrix computed at once
    num_examples: int = 6  # retrieval examples shown in the report


@dataclass
class ExperimentConfig:
    name: str = "clip_small"
    # fine-tuning: start from the weights (and tokenizer) of an earlier run directory or checkpoint
    init_from: str | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    objectives: ObjectivesConfig = field(default_factory=ObjectivesConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def check_consistency(cfg: ExperimentConfig) -> None:
    """Cross-section checks a single dataclass cannot do on its own."""
    image = cfg.model.image_encoder
    if cfg.data.format == "scenes" and getattr(image, "image_size", None) not in (None, cfg.data.scenes.image_size):
        raise ValueError(
            f"model.image_encoder.image_size={image.image_size} differs from data.scenes.image_size={cfg.data.scenes.image_size}"
        )


def with_vocab_size(cfg: ExperimentConfig, vocab_size: int) -> ExperimentConfig:
    """The resolved config: the text vocabulary size comes from the tokenizer actually used."""
    text = replace(cfg.model.text_encoder, vocab_size=vocab_size)
    return replace(cfg, model=replace(cfg.model, text_encoder=text))
