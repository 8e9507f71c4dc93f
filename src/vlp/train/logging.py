"""Metric logging: JSONL always, TensorBoard when installed, and a human progress display.

The progress display is a tqdm bar on a terminal and a plain line every `log_every` steps
otherwise (CI logs and `make demo > log` stay readable instead of filling with carriage returns).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm


class MetricLogger:
    """Appends one JSON object per logged step to `metrics.jsonl`.

    On resume the file is cut back to the resumed step, so the log of an interrupted-then-resumed run
    reads exactly like one uninterrupted run (no duplicated steps after the last checkpoint).
    """

    def __init__(self, run_dir: Path, resume_step: int | None = None, tensorboard: bool = True) -> None:
        self.path = run_dir / "metrics.jsonl"
        truncate_jsonl(self.path, resume_step)
        self._writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(run_dir / "tensorboard"))
            except (ImportError, ModuleNotFoundError):
                self._writer = None

    def log(self, step: int, values: dict[str, Any]) -> None:
        record = {"step": step, **values}
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if self._writer is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)):
                    self._writer.add_scalar(key, value, step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def truncate_jsonl(path: Path, resume_step: int | None) -> None:
    """Cut a per-step JSONL log back to `resume_step` (resume), or delete it (fresh run)."""
    if not path.exists():
        return
    if resume_step is None:
        path.unlink()
        return
    kept = [line for line in path.read_text(encoding="utf-8").splitlines() if _step_of(line) <= resume_step]
    path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


def _step_of(line: str) -> int:
    try:
        return int(json.loads(line).get("step", -1))
    except (json.JSONDecodeError, AttributeError, ValueError):
        return 1 << 62  # unreadable line: drop it


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


class Progress:
    """tqdm on a TTY, periodic plain lines elsewhere."""

    def __init__(self, total: int, initial: int, every: int, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.every = every
        self.total = total
        self.start = time.monotonic()
        self.bar = tqdm(total=total, initial=initial, file=self.stream, dynamic_ncols=True, desc="train") if self.stream.isatty() else None

    def update(self, step: int, values: dict[str, float]) -> None:
        text = {k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in values.items()}
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix(text, refresh=False)
        elif step % self.every == 0 or step == self.total:
            elapsed = time.monotonic() - self.start
            fields = " ".join(f"{k}={v}" for k, v in text.items())
            print(f"[train] step {step}/{self.total} {fields} elapsed={elapsed:.0f}s", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
