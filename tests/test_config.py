"""Tests for vlp.config: typed building, dumping, merging, dotted overrides, YAML presets.

The dataclasses below mimic the real component configs (a discriminated image-encoder union inside a
model inside an experiment) and use `from __future__ import annotations`, the harder case where every
annotation is a string resolved through `typing.get_type_hints`.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import pytest

from vlp.config import ConfigError, apply_overrides, config_hash, from_dict, load_yaml_config, merge, to_dict
from vlp.registry import Registry


@dataclass(frozen=True)
class ViT:
    kind: str = "vit"
    width: int = 192
    depth: int = 4
    patch_size: int = 16
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def __post_init__(self) -> None:
        if self.width % 2:
            raise ValueError("width must be even")


@dataclass(frozen=True)
class Patch:
    kind: str = "patch"
    width: int = 64
    patch_size: int = 32


@dataclass
class Text:
    kind: str = "bert"
    width: int = 128
    vocab: Optional[Path] = None
    pool: Literal["cls", "mean"] = "cls"


class Precision(enum.Enum):
    FP32 = "fp32"
    BF16 = "bf16"


@dataclass
class Model:
    embed_dim: int  # required: no default
    image_encoder: ViT | Patch = field(default_factory=ViT)
    text_encoder: Text = field(default_factory=Text)
    logit_scale: float = 2.5
    extra_image: ViT | Patch | None = None


@dataclass
class Train:
    lr: float = 1e-4
    steps: int = 10
    amp: bool = False
    ks: tuple[int, ...] = (1, 5)
    splits: list[str] = field(default_factory=lambda: ["train"])
    loss_weights: dict[str, float] = field(default_factory=lambda: {"itc": 1.0, "itm": 1.0})
    out: Path = Path("runs")
    precision: Precision = Precision.FP32
    name: str = "run"
    seed: int | None = None
    anything: Any = None


@dataclass
class Experiment:
    model: Model = field(default_factory=lambda: Model(embed_dim=32))
    train: Train = field(default_factory=Train)


def err(fn, *args) -> str:
    with pytest.raises(ConfigError) as info:
        fn(*args)
    return str(info.value)


# ---------------------------------------------------------------- from_dict / to_dict


def test_from_dict_builds_nested_and_coerces():
    cfg = from_dict(Experiment, {
        "model": {"embed_dim": 64, "image_encoder": {"kind": "patch", "width": 8}, "logit_scale": 3,
                  "text_encoder": {"vocab": "v/vocab.txt"}},
        "train": {"lr": "1e-3", "steps": 20.0, "ks": [1, 10], "out": "x/y", "precision": "bf16",
                  "loss_weights": {"itc": 2}},
    })
    assert cfg.model.image_encoder == Patch(width=8)
    assert cfg.model.text_encoder.vocab == Path("v/vocab.txt")
    assert cfg.model.logit_scale == 3.0 and isinstance(cfg.model.logit_scale, float)  # int widens
    assert cfg.train.lr == 0.001 and cfg.train.steps == 20 and isinstance(cfg.train.steps, int)
    assert cfg.train.ks == (1, 10) and cfg.train.out == Path("x/y") and cfg.train.precision is Precision.BF16
    assert cfg.train.loss_weights == {"itc": 2.0}  # from_dict builds: the dict is replaced, not merged


def test_round_trip_and_plain_output():
    cfg = from_dict(Experiment, {"model": {"embed_dim": 8, "extra_image": {"kind": "patch"}}, "train": {"seed": 3}})
    plain = to_dict(cfg)
    assert plain["model"]["image_encoder"] == {"kind": "vit", "width": 192, "depth": 4, "patch_size": 16,
                                               "mean": [0.5, 0.5, 0.5]}
    assert plain["model"]["extra_image"]["kind"] == "patch"
    assert plain["train"]["out"] == "runs" and plain["train"]["precision"] == "fp32" and plain["train"]["ks"] == [1, 5]
    assert from_dict(Experiment, plain) == cfg
    import json, yaml
    assert yaml.safe_load(yaml.safe_dump(plain)) == plain and json.loads(json.dumps(plain)) == plain


def test_type_errors_name_path_expected_and_got():
    assert err(from_dict, Model, {"embed_dim": "abc"}) == "embed_dim: expected int, got 'abc' (str)"
    assert err(from_dict, Experiment, {"model": {"embed_dim": "abc"}}) == (
        "model.embed_dim: expected int, got 'abc' (str)")
    assert "expected int, got True (bool)" in err(from_dict, Model, {"embed_dim": True})
    assert "expected int, got 1.5 (float)" in err(from_dict, Model, {"embed_dim": 1.5})
    assert "train.amp: expected bool, got 1 (int)" in err(from_dict, Experiment, {"train": {"amp": 1}})
    assert "train.lr: expected float, got False (bool)" in err(from_dict, Experiment, {"train": {"lr": False}})
    assert "train.lr: expected float, got '0.1' (str)" in err(from_dict, Experiment, {"train": {"lr": "0.1"}})
    assert "train.name: expected str, got 3 (int)" in err(from_dict, Experiment, {"train": {"name": 3}})
    assert "train.out: expected Path, got 3 (int)" in err(from_dict, Experiment, {"train": {"out": 3}})
    assert "train.seed: expected int | None, got 'x'" in err(from_dict, Experiment, {"train": {"seed": "x"}})
    assert "train.ks[1]: expected int, got 'a'" in err(from_dict, Experiment, {"train": {"ks": [1, "a"]}})
    assert "train.ks: expected tuple[int, ...], got 'ab'" in err(from_dict, Experiment, {"train": {"ks": "ab"}})
    assert "train.splits[0]: expected str" in err(from_dict, Experiment, {"train": {"splits": [1]}})
    assert "train.loss_weights.itc: expected float" in err(from_dict, Experiment, {"train": {"loss_weights": {"itc": "x"}}})
    assert "mean: expected tuple[float, float, float] (3 items)" in err(from_dict, ViT, {"mean": [1, 2]})
    assert "text_encoder: expected a mapping for Text, got 5 (int)" in err(from_dict, Model, {"embed_dim": 1, "text_encoder": 5})
    assert "text_encoder: expected Text, got None" in err(from_dict, Model, {"embed_dim": 1, "text_encoder": None})
    assert "train.precision: expected one of 'fp32', 'bf16'" in err(from_dict, Experiment, {"train": {"precision": "fp8"}})
    assert "<root>: expected a mapping for Model, got [1] (list)" in err(from_dict, Model, [1])


def test_literal_and_optional():
    assert from_dict(Text, {"pool": "mean", "vocab": None}).pool == "mean"
    assert err(from_dict, Text, {"pool": "maen"}) == (
        "pool: expected one of 'cls', 'mean', got 'maen' (str); did you mean 'mean'?")
    assert from_dict(Train, {"seed": None, "anything": {"free": [1]}}).anything == {"free": [1]}


def test_missing_required_names_path():
    assert err(from_dict, Experiment, {"model": {"image_encoder": {}}}) == "missing required key 'model.embed_dim'"


def test_post_init_value_error_is_wrapped_with_path():
    msg = err(from_dict, Experiment, {"model": {"embed_dim": 1, "image_encoder": {"width": 3}}})
    assert msg == "model.image_encoder: invalid ViT: width must be even"
    with pytest.raises(ConfigError) as info:
        from_dict(ViT, {"width": 3})
    assert isinstance(info.value.__cause__, ValueError) and isinstance(info.value, ValueError)


def test_string_annotations_and_real_annotations_both_work():
    Real = dataclasses.make_dataclass("Real", [("x", int | None, None), ("y", tuple[str, ...], ())])
    assert from_dict(Real, {"x": 2, "y": ["a"]}) == Real(x=2, y=("a",))
    assert "x: expected int | None, got 'a' (str)" in err(from_dict, Real, {"x": "a"})


def test_scientific_notation_strings_for_numbers_only():
    assert from_dict(Train, {"lr": "1e-3", "steps": "1e3"}) == Train(lr=0.001, steps=1000)
    assert from_dict(Train, {"lr": "-2.5E+2"}).lr == -250.0
    assert "steps: expected int, got 0.5" in err(from_dict, Train, {"steps": "5e-1"})
    assert from_dict(Train, {"name": "1e-3"}).name == "1e-3"


# ---------------------------------------------------------------- unknown keys


def test_unknown_key_suggests_nearest_sibling_with_full_path():
    data = {"model": {"embed_dim": 1, "text_encoder": {"widht": 3}}}
    assert err(from_dict, Experiment, data) == (
        "unknown key 'model.text_encoder.widht'; did you mean 'model.text_encoder.width'?")


def test_unknown_key_found_elsewhere_in_tree():
    msg = err(from_dict, Experiment, {"train": {"vocab": "x"}})
    assert msg == "unknown key 'train.vocab'; did you mean 'model.text_encoder.vocab'?"
    msg = err(from_dict, Experiment, {"train": {"depth": 3}})  # same leaf in a union member
    assert msg == "unknown key 'train.depth'; did you mean 'model.extra_image.depth' or 'model.image_encoder.depth'?"
    assert "did you mean 'model.text_encoder.vocab'?" in err(from_dict, Experiment, {"train": {"vocabb": 1}})


def test_unknown_key_of_other_union_member_and_no_match():
    msg = err(from_dict, Experiment, {"model": {"embed_dim": 1, "image_encoder": {"kind": "patch", "depth": 2}}})
    assert msg == "unknown key 'model.image_encoder.depth'; 'depth' is a field of kind 'vit', not 'patch'"
    assert err(from_dict, Text, {"zzz": 1}) == "unknown key 'zzz'; valid keys: kind, pool, vocab, width"


def test_unknown_key_with_path_prefix():
    msg = err(from_dict, Text, {"widht": 1}, "model.text_encoder")
    assert msg == "unknown key 'model.text_encoder.widht'; did you mean 'model.text_encoder.width'?"


# ---------------------------------------------------------------- discriminated unions


def test_union_kind_selection_and_defaults():
    cfg = from_dict(Model, {"embed_dim": 1, "image_encoder": {"kind": "patch"}})
    assert isinstance(cfg.image_encoder, Patch)
    assert isinstance(from_dict(Model, {"embed_dim": 1, "image_encoder": {"width": 8}}).image_encoder, ViT)
    assert isinstance(from_dict(Model, {"embed_dim": 1, "extra_image": {}}).extra_image, ViT)  # first member
    assert from_dict(ViT | Patch, {"kind": "patch", "width": 2}) == Patch(width=2)


def test_unknown_kind_lists_valid_kinds():
    msg = err(from_dict, Model, {"embed_dim": 1, "image_encoder": {"kind": "vti"}})
    assert msg == "image_encoder.kind: unknown kind 'vti'; did you mean 'vit'? valid kinds: 'vit', 'patch'"
    assert "text_encoder.kind: unknown kind 'gpt'" in err(from_dict, Model, {"embed_dim": 1, "text_encoder": {"kind": "gpt"}})
    assert "image_encoder.kind: expected str, got 3" in err(from_dict, Model, {"embed_dim": 1, "image_encoder": {"kind": 3}})


def test_union_field_default_class_kept_without_kind():
    @dataclass
    class Holder:
        enc: ViT | Patch = field(default_factory=Patch)

    assert from_dict(Holder, {"enc": {"width": 4}}).enc == Patch(width=4)


# ---------------------------------------------------------------- merge


def test_merge_is_partial_and_returns_new_object():
    base = Experiment()
    new = merge(base, {"model": {"image_encoder": {"depth": 2}}, "train": {"loss_weights": {"itm": 0.5, "mlm": 1}}})
    assert new.model.image_encoder == ViT(depth=2) and base.model.image_encoder == ViT()
    assert new.train.loss_weights == {"itc": 1.0, "itm": 0.5, "mlm": 1.0}  # dict fields update key by key
    assert base.train.loss_weights == {"itc": 1.0, "itm": 1.0}
    assert new.model.embed_dim == 32 and new.train == dataclasses.replace(base.train, loss_weights=new.train.loss_weights)


def test_merge_kind_switch_builds_from_new_defaults():
    base = merge(Experiment(), {"model": {"image_encoder": {"width": 100}}})
    new = merge(base, {"model": {"image_encoder": {"kind": "patch", "patch_size": 8}}})
    assert new.model.image_encoder == Patch(patch_size=8)  # width 64 from Patch, not 100
    same = merge(base, {"model": {"image_encoder": {"kind": "vit", "depth": 1}}})
    assert same.model.image_encoder == ViT(width=100, depth=1)
    assert isinstance(merge(new, {"model": {"image_encoder": {"width": 2}}}).model.image_encoder, Patch)
    assert merge(base, {"model": {"extra_image": {"kind": "patch"}}}).model.extra_image == Patch()


def test_merge_errors_and_post_init():
    assert err(merge, Experiment(), {"model": {"embed_dimm": 3}}) == (
        "unknown key 'model.embed_dimm'; did you mean 'model.embed_dim'?")
    assert err(merge, Experiment(), {"model": {"image_encoder": {"width": 5}}}) == (
        "model.image_encoder: invalid ViT: width must be even")
    msg = err(merge, Experiment(), {"model": {"image_encoder": {"kind": "cnn"}}})
    assert msg.startswith("model.image_encoder.kind: unknown kind 'cnn'")
    assert "<root>: expected a mapping to merge" in err(merge, Experiment(), [1])
    assert "kind: unknown kind 'patch'; valid kinds: 'bert'" in err(merge, Text(), {"kind": "patch"})


# ---------------------------------------------------------------- apply_overrides


def test_overrides_parse_each_type():
    cfg = apply_overrides(Experiment(), [
        "model.embed_dim=256", "train.lr=1e-3", "train.amp=true", "train.ks=[1,2]", "train.seed=null",
        "train.splits=[a, b]", "train.out=/tmp/x", "train.precision=bf16", "train.loss_weights.itm=0",
        "model.text_encoder.pool=mean", "model.logit_scale=3", "model.image_encoder.mean=[0, 0.5, 1]",
    ])
    assert cfg.model.embed_dim == 256 and cfg.train.lr == 0.001 and cfg.train.amp is True
    assert cfg.train.ks == (1, 2) and cfg.train.seed is None and cfg.train.splits == ["a", "b"]
    assert cfg.train.out == Path("/tmp/x") and cfg.train.precision is Precision.BF16
    assert cfg.train.loss_weights == {"itc": 1.0, "itm": 0.0} and cfg.model.text_encoder.pool == "mean"
    assert cfg.model.logit_scale == 3.0 and cfg.model.image_encoder.mean == (0.0, 0.5, 1.0)


def test_overrides_keep_text_for_str_fields():
    cfg = apply_overrides(Train(), ["name=2024", "seed=7"])
    assert cfg.name == "2024" and cfg.seed == 7
    assert apply_overrides(Train(), ["name=no"]).name == "no"  # YAML 1.1 would say False
    assert apply_overrides(Train(), ["name='quoted'"]).name == "quoted"
    assert apply_overrides(Text(), ["vocab=null"]).vocab is None
    assert apply_overrides(Text(), ["vocab=v.txt"]).vocab == Path("v.txt")


def test_overrides_union_switch_and_mapping_values():
    cfg = apply_overrides(Experiment(), ["model.image_encoder.kind=patch", "model.image_encoder.width=8"])
    assert cfg.model.image_encoder == Patch(width=8)
    cfg = apply_overrides(Experiment(), ["model.image_encoder={kind: patch, patch_size: 4}"])
    assert cfg.model.image_encoder == Patch(patch_size=4)
    assert apply_overrides(cfg, ["model.extra_image={}"]).model.extra_image == ViT()
    assert apply_overrides(Experiment(), ["model.extra_image=null"]).model.extra_image is None


def test_override_errors():
    assert err(apply_overrides, Experiment(), ["model.image_encoder=5"]) == (
        "model.image_encoder: expected a mapping for ViT | Patch, got 5 (int)")
    assert err(apply_overrides, Experiment(), ["model.embed_dim=abc"]) == "model.embed_dim: expected int, got 'abc' (str)"
    assert err(apply_overrides, Experiment(), ["model.text_encoder.widht=3"]) == (
        "unknown key 'model.text_encoder.widht'; did you mean 'model.text_encoder.width'?")
    assert "malformed override 'model.embed_dim'" in err(apply_overrides, Experiment(), ["model.embed_dim"])
    assert "malformed override 'a..b=1'" in err(apply_overrides, Experiment(), ["a..b=1"])
    assert "cannot parse value" in err(apply_overrides, Experiment(), ["train.ks=[1,"])
    with pytest.raises(TypeError):
        apply_overrides(Experiment(), "train.lr=1")


# ---------------------------------------------------------------- YAML presets


PRESETS = {"tiny": lambda: Experiment(model=Model(embed_dim=16)), "small": lambda: Experiment(model=Model(embed_dim=64))}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


def test_yaml_preset_plus_overrides(tmp_path):
    path = write(tmp_path, "preset: tiny\nmodel:\n  image_encoder: {kind: patch}\ntrain:\n  lr: 1e-3\n  ks: [1, 10]\n")
    cfg = load_yaml_config(path, PRESETS, overrides=["train.steps=3"])
    assert cfg.model.embed_dim == 16 and cfg.model.image_encoder == Patch()
    assert cfg.train.lr == 0.001 and cfg.train.ks == (1, 10) and cfg.train.steps == 3


def test_yaml_presets_from_function_and_registry(tmp_path):
    reg: Registry = Registry("experiment preset")
    reg.register("tiny")(PRESETS["tiny"])
    path = write(tmp_path, "preset: tiny\n")
    assert load_yaml_config(path, reg).model.embed_dim == 16
    assert load_yaml_config(path, lambda name: reg.get(name)()).model.embed_dim == 16
    bad = write(tmp_path, "preset: tiyn\n")
    assert "unknown preset 'tiyn'; did you mean 'tiny'?" in err(load_yaml_config, bad, reg)
    assert "preset: unknown experiment preset 'tiyn'; did you mean 'tiny'?" in err(load_yaml_config, bad, lambda n: reg.get(n)())


def test_yaml_unknown_preset_lists_nearest(tmp_path):
    path = write(tmp_path, "preset: tinny\n")
    assert err(load_yaml_config, path, PRESETS) == (
        f"{path}: unknown preset 'tinny'; did you mean 'tiny'? available: small, tiny")


def test_yaml_without_preset_needs_default(tmp_path):
    path = write(tmp_path, "train: {steps: 5}\n")
    assert "no 'preset' key and no default" in err(load_yaml_config, path, PRESETS)
    assert load_yaml_config(path, PRESETS, default=Experiment).train.steps == 5
    assert load_yaml_config(write(tmp_path, ""), PRESETS, default=Experiment) == Experiment()


def test_yaml_errors_name_file_and_path(tmp_path):
    path = write(tmp_path, "preset: tiny\nmodel: {embed_dim: abc}\n")
    assert err(load_yaml_config, path, PRESETS) == f"{path}: model.embed_dim: expected int, got 'abc' (str)"
    assert "expected a mapping at the top level" in err(load_yaml_config, write(tmp_path, "- 1\n"), PRESETS)
    assert "invalid YAML" in err(load_yaml_config, write(tmp_path, "a: [\n"), PRESETS)
    assert "preset: expected str" in err(load_yaml_config, write(tmp_path, "preset: [1]\n"), PRESETS)


# ---------------------------------------------------------------- hash


def test_config_hash_is_short_stable_and_sensitive():
    a, b = Experiment(), Experiment()
    assert config_hash(a) == config_hash(b) and len(config_hash(a)) == 12
    assert config_hash(a) != config_hash(apply_overrides(a, ["train.lr=2e-4"]))
    assert config_hash(a) == config_hash(from_dict(Experiment, to_dict(a)))
    assert config_hash({"b": 1, "a": 2}) == config_hash({"a": 2, "b": 1})
    # pinned: the digest must not change between runs or Python versions (run directories depend on it)
    assert config_hash({"a": [1, 2.5, "x"], "b": None}) == "ebeb83367f96"
    assert config_hash({"b": None, "a": (1, 2.5, "x")}) == "ebeb83367f96"  # tuples hash as lists
    assert len(config_hash(a, length=20)) == 20


def test_overrides_are_validated_together_not_one_by_one() -> None:
    """A preset with warmup_steps=100 lowered to max_steps=30 and warmup_steps=5 in one command."""
    from vlp.train.config import TrainConfig

    cfg = apply_overrides(TrainConfig(max_steps=1000, warmup_steps=100), ["max_steps=30", "warmup_steps=5"])
    assert (cfg.max_steps, cfg.warmup_steps) == (30, 5)
    with pytest.raises(ConfigError, match="warmup_steps"):
        apply_overrides(TrainConfig(max_steps=1000, warmup_steps=100), ["max_steps=30"])
