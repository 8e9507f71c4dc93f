from pathlib import Path

import pytest
import torch
from torch import nn

from vlp.train.checkpoint import CheckpointError, TrainerState, find_resumable, load_checkpoint, save_checkpoint, verify_checkpoint


def make() -> tuple[nn.Module, torch.optim.Optimizer]:
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.randn(3, 4)).sum().backward()
    optimizer.step()
    return model, optimizer


def test_round_trip_restores_weights_optimizer_and_rng(tmp_path: Path) -> None:
    model, optimizer = make()
    path = save_checkpoint(tmp_path, model, optimizer, TrainerState(step=7, epoch=1, epoch_position=12, samples_seen=99))
    expected_draw = torch.rand(3)
    model2, optimizer2 = make()
    torch.rand(5)  # move the RNG on
    state = load_checkpoint(path, model2, optimizer2)
    assert (state.step, state.epoch, state.epoch_position, state.samples_seen) == (7, 1, 12, 99)
    torch.testing.assert_close(torch.rand(3), expected_draw)
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        torch.testing.assert_close(a, b)
    sa, sb = optimizer.state_dict(), optimizer2.state_dict()
    for pid in sa["state"]:
        for key in sa["state"][pid]:
            torch.testing.assert_close(sa["state"][pid][key], sb["state"][pid][key])
    assert sa["param_groups"][0]["lr"] == sb["param_groups"][0]["lr"]


def test_truncated_checkpoint_is_refused_and_resume_falls_back(tmp_path: Path) -> None:
    model, optimizer = make()
    first = save_checkpoint(tmp_path, model, optimizer, TrainerState(step=1), keep=3)
    second = save_checkpoint(tmp_path, model, optimizer, TrainerState(step=2), keep=3)
    weights = second / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])  # truncated by a crash / full disk
    with pytest.raises(CheckpointError, match="truncated"):
        verify_checkpoint(second)
    with pytest.warns(UserWarning, match="skipping unusable checkpoint"):
        assert find_resumable(tmp_path) == first


def test_no_temporary_directories_left_and_pruning(tmp_path: Path) -> None:
    model, optimizer = make()
    for step in range(1, 5):
        save_checkpoint(tmp_path, model, optimizer, TrainerState(step=step), keep=2)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["latest", "step_00000003", "step_00000004"]
    assert (tmp_path / "latest").read_text().strip() == "step_00000004"


def test_checkpoint_of_another_model_is_a_clear_error(tmp_path: Path) -> None:
    model, optimizer = make()
    path = save_checkpoint(tmp_path, model, optimizer, TrainerState(step=1))
    other = nn.Linear(4, 2)
    with pytest.raises(CheckpointError, match="does not fit"):
        load_checkpoint(path, other, torch.optim.AdamW(other.parameters()))
