"""Trainer engine options without extra processes: precision choice, rank-sharded sampling, and
torch.compile falling back to eager when compilation fails."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from vlp.tasks import ObjectivesConfig
from vlp.train import TrainConfig, Trainer
from vlp.train.precision import resolve_precision
from vlp.train.sampler import ResumableRandomSampler

sys.path.insert(0, str(Path(__file__).parent))  # pytest's importlib mode does not put test folders on the path
from test_accumulation import _big_batch, _collate, _Pairs, _task  # noqa: E402 - the same tiny task and data


def _cpuinfo(tmp_path: Path, flags: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nflags\t\t: fpu sse2 avx2 {flags}\n")
    return path


def test_auto_precision_follows_native_bf16_support(tmp_path: Path) -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu, _cpuinfo(tmp_path, "avx512f")).name == "fp32"
    chosen = resolve_precision("auto", cpu, _cpuinfo(tmp_path, "avx512f avx512_bf16"))
    assert chosen.name == "bf16" and "avx512_bf16" in chosen.reason
    assert resolve_precision("auto", cpu, _cpuinfo(tmp_path, "amx_bf16 amx_tile")).dtype is torch.bfloat16
    assert resolve_precision("auto", cpu, tmp_path / "missing").name == "fp32"
    assert resolve_precision("fp32", cpu).dtype is None
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        resolve_precision("fp16", cpu)
    with pytest.raises(ValueError, match="auto, fp32, bf16 or fp16"):
        resolve_precision("fp8", cpu)


def test_ranks_take_disjoint_slices_of_each_global_batch_and_resume_mid_epoch() -> None:
    world, batch, n = 3, 4, 50  # 50 // 12 = 4 global batches; the 2 left over are dropped on every rank
    ranks = [list(ResumableRandomSampler(n, seed=5, rank=r, world_size=world, batch_size=batch)) for r in range(world)]
    single = ResumableRandomSampler(n, seed=5).permutation().tolist()
    for step in range(4):  # global batch t of W ranks == batch t of one process with a W-times larger batch
        rows = [i for r in range(world) for i in ranks[r][step * batch:(step + 1) * batch]]
        assert rows == single[step * world * batch:(step + 1) * world * batch]
    assert all(len(r) == 16 for r in ranks)
    resumed = ResumableRandomSampler(n, seed=5, start_index=2 * world * batch, rank=1, world_size=world, batch_size=batch)
    assert list(resumed) == ranks[1][2 * batch:] and len(resumed) == 2 * batch
    with pytest.raises(ValueError, match="not a multiple of the global batch"):
        ResumableRandomSampler(n, seed=5, start_index=5, rank=0, world_size=world, batch_size=batch)


def test_failed_compilation_falls_back_to_eager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_compile(self: nn.Module, *args, **kwargs) -> None:
        def fail(*_a, **_k):
            raise RuntimeError("simulated inductor failure")

        self._compiled_call_impl = fail

    monkeypatch.setattr(nn.Module, "compile", broken_compile)
    task = _task("clip_tiny", ObjectivesConfig(itc=1))
    cfg = TrainConfig(batch_size=8, max_steps=2, warmup_steps=0, log_every=1, checkpoint_every=2, num_workers=0,
                      tensorboard=False, device="cpu", compile=True)
    trainer = Trainer(task, _Pairs(_big_batch(16)), _collate, cfg, tmp_path)
    assert trainer.compiled
    with pytest.warns(UserWarning, match="torch.compile failed"):
        result = trainer.fit()
    assert result.step == 2 and not trainer.compiled
    assert all(m._compiled_call_impl is None for m in task.model.modules())
