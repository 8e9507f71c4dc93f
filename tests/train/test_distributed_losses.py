"""Two real gloo processes with batch B each == one process with batch 2B: loss and DDP-averaged
gradients, for in-batch ITC gathered with gradient (global and local loss), momentum-queue ITC (two
steps, so the second sees a queue filled from both ranks) and ITC + ITM with globally mined negatives."""

from __future__ import annotations

import os
import socket
from dataclasses import replace
from pathlib import Path

import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from vlp.data.batch import Batch
from vlp.models import build_model, model_preset
from vlp.tasks import ObjectivesConfig, PretrainTask

VOCAB, B, W = 60, 4, 2
CASES = {
    "global": ("clip_tiny", ObjectivesConfig(itc=1, gather_with_grad=True, local_loss=False)),
    "local": ("clip_tiny", ObjectivesConfig(itc=1, gather_with_grad=True, local_loss=True)),
    "queue": ("clip_tiny", ObjectivesConfig(itc=1, queue_size=16, distill_alpha=0.4, distill_ramp_steps=1)),
    "itm": ("albef_tiny", ObjectivesConfig(itc=1, itm=1)),
}


def _task(case: str) -> PretrainTask:
    name, objectives = CASES[case]
    torch.manual_seed(0)
    cfg = model_preset(name)
    return PretrainTask(build_model(replace(cfg, text_encoder=replace(cfg.text_encoder, vocab_size=VOCAB))), objectives)


def _batch(step: int, rows: slice) -> Batch:
    g = torch.Generator().manual_seed(100 + step)
    ids = torch.randint(7, VOCAB, (W * B, 8), generator=g)
    ids[:, 0], ids[:, -1] = 2, 3
    image_ids = torch.tensor([0, 1, 2, 2, 3, 4, 5, 0]) + 10 * step  # shared ids within and across ranks
    full = Batch(pixels=torch.randn(W * B, 3, 32, 32, generator=g), input_ids=ids, attention_mask=torch.ones_like(ids), image_ids=image_ids)
    return full._map(lambda t: t[rows])


def _two_steps(task: PretrainTask, engine: torch.nn.Module, rows: slice) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for step in range(2):
        task.zero_grad(set_to_none=True)
        loss = engine(_batch(step, rows)).loss
        loss.backward()
        out[f"loss{step}"] = loss.detach().reshape(1)
        out.update({f"grad{step}.{n}": p.grad.detach().clone() for n, p in task.named_parameters() if p.grad is not None})
        task.after_step()  # enqueue (gathered over ranks) and EMA, once per step
    if task.queue is not None:
        out["queue_image"], out["queue_ids"] = task.queue.image_queue.clone(), task.queue.id_queue.clone()
    return out


def _worker(rank: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    from vlp.train.distributed import DistributedContext
    from vlp.train.parallel import Parallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=W)
    try:
        ctx = DistributedContext(rank=rank, world_size=W)
        for case in CASES:
            task = _task(case)
            task.set_distributed(ctx.gather_context())
            engine = Parallel(task, ctx, "ddp", find_unused=not task.uses_all_parameters()).engine
            save_file(_two_steps(task, engine, slice(rank * B, (rank + 1) * B)), str(Path(out_dir) / f"{case}_rank{rank}.safetensors"))
        # both ranks finish their collectives before either tears gloo down: destroying the group
        # while the peer still talks to it aborted a worker ('terminate called without an active exception')
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_ranks_equal_one_process_with_the_whole_batch(tmp_path: Path) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=W, join=True)
    for case in CASES:
        task = _task(case)
        single = _two_steps(task, task, slice(0, W * B))
        ranks = [load_file(str(tmp_path / f"{case}_rank{r}.safetensors")) for r in range(W)]
        for step in range(2):
            mean_loss = sum(r[f"loss{step}"] for r in ranks) / W  # per-rank losses average to the global one
            torch.testing.assert_close(mean_loss, single[f"loss{step}"], atol=1e-5, rtol=0, msg=f"{case} loss step {step}")
        grads = [k for k in single if k.startswith("grad")]
        assert grads and set(grads) == {k for k in ranks[0] if k.startswith("grad")}, case
        for key in grads:
            for r in range(W):  # DDP-averaged gradients are the single-process ones on every rank
                torch.testing.assert_close(ranks[r][key], single[key], atol=1e-5, rtol=0, msg=f"{case} {key} rank {r}")
        if case == "queue":
            for r in range(W):
                assert torch.equal(ranks[r]["queue_ids"], single["queue_ids"])
                torch.testing.assert_close(ranks[r]["queue_image"], single["queue_image"], atol=1e-6, rtol=0)
