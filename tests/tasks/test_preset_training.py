"""Every tiny preset trains for 50 steps on scenes with its published objectives, and each of its
losses goes down (compared over the first and last thirds of the steps where it was computed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vlp.config import apply_overrides
from vlp.experiment.presets import experiment_preset
from vlp.experiment.run import train_experiment
from vlp.models import FAMILIES, REGION_FAMILIES
from vlp.train.logging import read_metrics

STEPS = 50


def loss_series(run: Path) -> dict[str, list[float]]:
    series: dict[str, list[float]] = {}
    for record in read_metrics(run):
        for key, value in record.items():
            if key.endswith("_loss"):
                series.setdefault(key, []).append(float(value))
    return series


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_tiny_preset_loss_goes_down(family: str, tiny_scenes: Path, tmp_path: Path) -> None:
    if family in REGION_FAMILIES:
        pytest.importorskip("vlp.data.region_data")
    cfg = apply_overrides(
        experiment_preset(f"{family}_tiny"),
        [f"data.path={tiny_scenes}", f"train.max_steps={STEPS}", "train.log_every=1", f"train.checkpoint_every={STEPS}",
         "train.tensorboard=false", "train.warmup_steps=5"],
    )
    train_experiment(cfg, tmp_path / family, log=lambda *_: None)
    series = loss_series(tmp_path / family)
    assert series, "no named losses were logged"
    expected = {f"{name}_loss" for name in cfg.objectives.active()}
    assert set(series) == expected
    for name, values in series.items():
        third = max(2, len(values) // 3)
        first, last = sum(values[:third]) / third, sum(values[-third:]) / third
        assert last < first, f"{family}: {name} did not go down ({first:.4f} -> {last:.4f}; {len(values)} steps)"
