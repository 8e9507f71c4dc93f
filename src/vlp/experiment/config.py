"""Experiment = model + data + training + evaluation configs, and the named experiment presets.

An experiment YAML names one of these presets and overrides fields; `--set a.b=c` overrides
further. The resolved config is saved in the run directory and in every checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

from vlp.models import ModelConfig, model_preset
from vlp.registry import Registry
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
    format: Literal["scenes", "karpathy"] = "scenes"
    # scenes: the directory to generate into / read from; karpathy: the dataset_coco.json file
    path: str = "data/scenes"
    image_root: str | None = None  # karpathy: directory holding `filepath/filename` (default: the JSON's folder)
    train_split: str = "train"
    eval_splits: tuple[str, ...] = ("test", "test_novel")
    vocab_size: int = 1000  # WordPiece vocabulary trained on the training captions
    tokenizer: str | None = None  # or an existing vocab.txt / tokenizer.json / saved tokenizer directory
    scenes: ScenesConfig = field(default_factory=ScenesConfig)


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
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


EXPERIMENT_PRESETS: Registry = Registry("experiment preset")


@EXPERIMENT_PRESETS.register("clip_small")
def clip_small() -> ExperimentConfig:
    """The demo: CLIP-style dual encoder pre-trained with ITC on 10k 64-pixel scenes, on CPU."""
    return ExperimentConfig(
        name="clip_small",
        model=model_preset("clip_small"),
        data=DataConfig(),
        train=TrainConfig(batch_size=128, max_steps=1200, lr=1e-3, warmup_steps=100, weight_decay=0.1, log_every=20, checkpoint_every=400),
    )


@EXPERIMENT_PRESETS.register("clip_tiny")
def clip_tiny() -> ExperimentConfig:
    """Seconds on CPU: for tests and smoke runs."""
    return ExperimentConfig(
        name="clip_tiny",
        model=model_preset("clip_tiny"),
        data=DataConfig(
            path="data/scenes_tiny",
            vocab_size=200,
            scenes=ScenesConfig(image_size=32, num_train=256, num_val=16, num_test=32, num_test_novel=32),
        ),
        train=TrainConfig(batch_size=32, max_steps=20, lr=1e-3, warmup_steps=2, log_every=5, checkpoint_every=10, num_workers=0),
        eval=EvalConfig(batch_size=64, num_examples=2),
    )


def experiment_preset(name: str) -> ExperimentConfig:
    factory: Callable[[], ExperimentConfig] = EXPERIMENT_PRESETS.get(name)
    return factory()


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
