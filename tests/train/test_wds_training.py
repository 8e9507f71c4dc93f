"""Training from WebDataset shards (data.format=wds): it trains, and a resumed run sees exactly the
batches and losses of an uninterrupted one, across epoch boundaries."""

import json
from itertools import islice
from pathlib import Path

import pytest

from vlp.config import apply_overrides
from vlp.data.formats import read_samples, write_samples, FormatOptions
from vlp.experiment.build import load_records
from vlp.experiment.presets import experiment_preset
from vlp.experiment.run import train_experiment
from vlp.train.logging import read_metrics


@pytest.fixture(scope="module")
def shards(tiny_scenes: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 40 training images of the scenes as 3 shards (16 + 16 + 8 samples)."""
    out = tmp_path_factory.mktemp("shards")
    samples = islice(read_samples("karpathy", tiny_scenes / "dataset_coco.json", splits=["train"]), 40)
    written = write_samples("wds", samples, out, FormatOptions(samples_per_shard=16))
    assert len(written) == 3
    return out


def wds_cfg(path: str, steps: int, workers: int):
    cfg = experiment_preset("clip_tiny")
    return apply_overrides(
        cfg,
        ["data.format=wds", f"data.path={path}", f"train.max_steps={steps}", "train.log_every=1",
         "train.checkpoint_every=3", "train.batch_size=16", "train.tensorboard=false", "train.debug_samples=true",
         f"train.num_workers={workers}", "model.image_encoder.dropout=0.1"],
    )


def steps_of(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "samples_rank0.jsonl").read_text().splitlines()]


def test_resumed_wds_run_sees_the_same_batches_and_losses(shards: Path, tmp_path: Path) -> None:
    # 40 samples, batch 16: 2 full batches per epoch (the last 8 samples dropped), so 7 steps span 4 epochs
    full = tmp_path / "full"
    train_experiment(wds_cfg(str(shards), 7, workers=1), full, log=lambda *_: None)
    reference = steps_of(full)
    assert [s["step"] for s in reference] == list(range(1, 8))
    rows = [s["indices"][0] for s in reference]
    assert all(len(r) == 16 for r in rows)
    assert len(set(rows[0]) | set(rows[1])) == 32  # one epoch: distinct samples
    assert rows[0] + rows[1] != rows[2] + rows[3]  # reshuffled next epoch
    assert [r["epoch"] for r in read_metrics(full)] == [0, 0, 1, 1, 2, 2, 3]  # as the map path: the epoch moves on at the next batch

    import vlp.train.trainer as trainer_module

    class StopAfter(Exception):
        pass

    original = trainer_module.save_checkpoint

    def save_then_die(directory, module, optimizer, state, keep=2, **kwargs):
        path = original(directory, module, optimizer, state, keep, **kwargs)
        if state.step == 3:  # mid-epoch: step 3 is the first batch of epoch 1
            raise StopAfter()
        return path

    part = tmp_path / "part"
    cfg = wds_cfg(str(shards), 7, workers=0)  # the order does not depend on the number of workers
    trainer_module.save_checkpoint = save_then_die
    try:
        with pytest.raises(StopAfter):
            train_experiment(cfg, part, log=lambda *_: None)
    finally:
        trainer_module.save_checkpoint = original
    train_experiment(cfg, part, resume=True, log=lambda *_: None)
    assert steps_of(part) == reference  # same rows per step and bit-exact losses on CPU
    assert [r["loss"] for r in read_metrics(part)] == [r["loss"] for r in read_metrics(full)]


def test_wds_records_are_one_training_split(shards: Path) -> None:
    data = wds_cfg(str(shards / "{00000..00002}.tar"), 7, 0).data
    records = load_records(data, ["train"])["train"]
    assert len(records) == 40 and all(r.captions for r in records)
    with pytest.raises(ValueError, match="need another format"):
        load_records(data, ["test"])


def test_torchrun_two_ranks_read_disjoint_halves(shards: Path, tiny_scenes: Path, tmp_path: Path) -> None:
    """`vlp train --set data.format=wds` under torchrun (2 gloo processes):
    each rank reads its own 20 of the 40 samples per epoch (one batch of 16, 4 dropped)."""
    import os
    import socket
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    run = tmp_path / "run"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(port), "-m", "vlp.cli", "train", "--preset", "clip_tiny", "--run-dir", str(run),
        "--set", "data.format=wds", "--set", f"data.path={shards}", "--set", "train.max_steps=3",
        "--set", "train.warmup_steps=1", "--set", "train.batch_size=16", "--set", "train.log_every=1",
        "--set", "train.tensorboard=false", "--set", "train.debug_samples=true", "--set", "train.num_workers=0",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    per_rank = [steps_of_rank(run, r) for r in (0, 1)]
    for step in range(3):  # one step per epoch
        a, b = (per_rank[r][step]["indices"][0] for r in (0, 1))
        assert len(a) == len(b) == 16 and not set(a) & set(b)
    assert per_rank[0][0]["loss"] == per_rank[1][0]["loss"]  # the all-reduced loss


def steps_of_rank(run: Path, rank: int) -> list[dict]:
    return [json.loads(line) for line in (run / f"samples_rank{rank}.jsonl").read_text().splitlines()]


def test_shuffle_buffer_setting_reaches_the_stream(shards: Path) -> None:
    """data.shuffle_buffer reaches the stream (a large buffer mixes samples across shards); a negative size is refused."""
    from vlp.experiment.build import build_tokenizer, build_training

    orders = {}
    for size in (1, 64):
        cfg = apply_overrides(wds_cfg(str(shards), 7, 0), [f"data.shuffle_buffer={size}"])
        records = load_records(cfg.data, ["train"])["train"]
        _, _, stream, _ = build_training(cfg, records, build_tokenizer(cfg.data, records))
        assert stream.shuffle_buffer == size
        orders[size] = stream.epoch_order(0).tolist()
    assert sorted(orders[1]) == sorted(orders[64]) == list(range(40))
    assert orders[1] != orders[64]  # shards are shuffled either way; only the buffer mixes within them
    cfg = apply_overrides(wds_cfg(str(shards), 7, 0), ["data.shuffle_buffer=-1"])
    records = load_records(cfg.data, ["train"])["train"]
    with pytest.raises(ValueError, match="shuffle_buffer must be >= 0"):
        build_training(cfg, records, build_tokenizer(cfg.data, records))
