"""A run killed with SIGTERM saves a checkpoint at the next step boundary, exits non-zero, and
`--resume` finishes it with every step logged exactly once."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path


def test_sigterm_checkpoints_then_resume_completes(tiny_scenes: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    steps = 150
    cmd = [
        sys.executable, "-m", "vlp.cli", "train", "--preset", "clip_tiny", "--run-dir", str(run),
        "--set", f"data.path={tiny_scenes}", "--set", f"train.max_steps={steps}", "--set", "train.log_every=1",
        "--set", "train.checkpoint_every=1000", "--set", "train.tensorboard=false", "--set", "train.batch_size=16",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = run / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.communicate()}"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "--resume" in err
    latest = (run / "checkpoints" / "latest").read_text().strip()
    stopped_at = int(latest.split("_")[1])
    assert 3 <= stopped_at < steps  # a checkpoint was written although none was due before the end

    resumed = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    logged = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert logged == list(range(1, steps + 1))
