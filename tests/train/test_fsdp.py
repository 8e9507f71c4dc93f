"""FSDP2 on two gloo processes trains clip_tiny for a few steps; its consolidated checkpoint (same
safetensors layout as one process) loads into a single process and gives the same embeddings."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from vlp.tasks import ObjectivesConfig
from vlp.train import TrainConfig, Trainer, load_model_weights

sys.path.insert(0, str(Path(__file__).parent))  # pytest's importlib mode does not put test folders on the path
from test_accumulation import _big_batch, _collate, _Pairs, _task  # noqa: E402 - the same tiny task and data

W, B, STEPS = 2, 4, 3


def _cfg() -> TrainConfig:
    return TrainConfig(batch_size=B, max_steps=STEPS, warmup_steps=0, log_every=1, checkpoint_every=STEPS,
                       num_workers=0, tensorboard=False, device="cpu", distributed="fsdp")


def _embeddings(task) -> dict[str, torch.Tensor]:
    task.eval()
    with torch.no_grad():
        features = task(_big_batch(8), features_only=True)  # through __call__: FSDP unshards the root
    return {"image": features.image_embeds, "text": features.text_embeds}


def _worker(rank: int, port: int, run_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=W)
    try:
        task = _task("clip_tiny", ObjectivesConfig(itc=1))
        trainer = Trainer(task, _Pairs(_big_batch(8 * B)), _collate, _cfg(), Path(run_dir))
        assert trainer.parallel.kind == "fsdp" and trainer.parallel.shard_units > 0
        trainer.fit()
        out = _embeddings(task)
        if rank == 0:
            save_file(out, str(Path(run_dir) / "fsdp_embeddings.safetensors"))
        # both ranks finish their collectives before either tears gloo down: destroying the group
        # while the peer still talks to it aborted a worker ('terminate called without an active exception')
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_fsdp_checkpoint_loads_into_one_process(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_worker, args=(port, str(tmp_path)), nprocs=W, join=True)
    checkpoint = tmp_path / "checkpoints" / f"step_{STEPS:08d}"
    task = _task("clip_tiny", ObjectivesConfig(itc=1))
    initial = {k: v.clone() for k, v in task.state_dict().items()}
    load_model_weights(checkpoint, task)
    moved = [k for k, v in task.state_dict().items() if not torch.equal(v, initial[k])]
    assert moved, "the FSDP run did not change any weight"
    expected = load_file(str(tmp_path / "fsdp_embeddings.safetensors"))
    for name, value in _embeddings(task).items():
        torch.testing.assert_close(value, expected[name], atol=1e-6, rtol=0, msg=name)
    # the optimiser state was consolidated too: one entry per trainable parameter, full shapes
    optimizer = load_file(str(checkpoint / "optimizer.safetensors"))
    shapes = [p.shape for p in task.parameters() if p.requires_grad]
    assert sorted(tuple(v.shape) for k, v in optimizer.items() if k.endswith(".exp_avg")) == sorted(tuple(s) for s in shapes)
