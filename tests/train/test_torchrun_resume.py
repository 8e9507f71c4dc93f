"""torchrun, two gloo processes, clip_tiny: a run SIGKILLed mid-epoch after a checkpoint and then
resumed sees exactly the samples (per step, per rank) and losses of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

STEPS, CHECKPOINT_EVERY = 48, 8  # 1280 pairs / (2 ranks x 16) = 40 steps per epoch: the run crosses one


def _command(run: Path, scenes: Path) -> list[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(port), "-m", "vlp.cli", "pretrain", "--preset", "clip_tiny", "--run-dir", str(run),
        "--set", f"data.path={scenes}", "--set", f"train.max_steps={STEPS}", "--set", "train.batch_size=16",
        "--set", "train.log_every=1", "--set", f"train.checkpoint_every={CHECKPOINT_EVERY}",
        "--set", "train.tensorboard=false", "--set", "train.debug_samples=true",
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}


def _records(run: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (run / name).read_text().splitlines()]


def test_sigkilled_two_process_run_resumes_exactly(tiny_scenes: Path, tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    done = subprocess.run(_command(reference, tiny_scenes), capture_output=True, text=True, timeout=240, env=_env())
    assert done.returncode == 0, done.stderr[-3000:]

    part = tmp_path / "part"
    proc = subprocess.Popen(_command(part, tiny_scenes), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=_env(), start_new_session=True)
    latest = part / "checkpoints" / "latest"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None and not latest.exists():
        time.sleep(0.02)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.communicate()[1][-3000:]}"
    os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both ranks, no chance to save
    proc.wait(timeout=60)
    killed_at = int(latest.read_text().strip().split("_")[1])
    assert killed_at < STEPS

    resumed = subprocess.run(_command(part, tiny_scenes) + ["--resume"], capture_output=True, text=True, timeout=240, env=_env())
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout + resumed.stderr
    for rank in (0, 1):
        expected = _records(reference, f"samples_rank{rank}.jsonl")
        got = _records(part, f"samples_rank{rank}.jsonl")
        assert [r["step"] for r in got] == list(range(1, STEPS + 1))
        assert [r["indices"] for r in got] == [r["indices"] for r in expected], f"rank {rank} saw other samples"
        assert [r["loss"] for r in got] == [r["loss"] for r in expected]
    seen = [i for rank in (0, 1) for r in _records(part, f"samples_rank{rank}.jsonl")[:40] for b in r["indices"] for i in b]
    assert sorted(seen) == list(range(1280))  # the first epoch: every pair exactly once over both ranks
    assert [r["loss"] for r in _records(part, "metrics.jsonl")] == [r["loss"] for r in _records(reference, "metrics.jsonl")]
