"""Shared fixtures: fixed seeds, small thread counts, and one tiny scenes dataset per session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session", autouse=True)
def _threads() -> None:
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """32-pixel scenes with the tiny preset's counts (generated once, ~1 s)."""
    from vlp.data.scenes import generate_scenes
    from vlp.experiment.presets import experiment_preset

    params = experiment_preset("clip_tiny").data.scenes
    out = tmp_path_factory.mktemp("scenes_tiny")
    generate_scenes(
        out, seed=params.seed, image_size=params.image_size, num_train=params.num_train, num_val=params.num_val,
        num_test=params.num_test, num_test_novel=params.num_test_novel, workers=1,
    )
    return out


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA
