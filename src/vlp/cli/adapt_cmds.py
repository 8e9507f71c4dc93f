"""`vlp finetune TASK` and `vlp evaluate TASK`: argument parsing only (see vlp.experiment.adapt)."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_finetune(args: argparse.Namespace) -> int:
    from vlp.experiment.adapt import finetune

    run_dir = Path(args.run_dir or f"{args.init_from.rstrip('/')}_{args.task}")
    result = finetune(args.task, Path(args.init_from), run_dir, overrides=args.set or [], answers=args.answers, generative=args.generative)
    print(f"fine-tuned to step {result.step} (loss {result.loss:.4f}) in {result.seconds:.0f}s; checkpoint {result.checkpoint}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from vlp.experiment.adapt import evaluate_task

    results = evaluate_task(
        args.task, Path(args.run_dir), args.split, k_test=args.k_test, method=args.method, num_beams=args.beams,
        answers=args.answers, device=args.device, log=lambda *_: None,
    )
    keys = sorted({k for metrics in results.values() for k in metrics})
    width = max(len(k) for k in keys) if keys else 10
    print(f"{'metric':<{width}}  " + "  ".join(f"{s:>10}" for s in results))
    for key in keys:
        print(f"{key:<{width}}  " + "  ".join(f"{results[s].get(key, float('nan')):>10.2f}" for s in results))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from vlp.experiment.adapt import EVAL_TASKS, FINETUNE_TASKS

    finetune = sub.add_parser("finetune", help="fine-tune a pre-trained run for retrieval, captioning or VQA")
    finetune.add_argument("task", choices=FINETUNE_TASKS)
    finetune.add_argument("--init-from", required=True, help="the pre-training run directory")
    finetune.add_argument("--run-dir", help="output directory (default <init-from>_<task>)")
    finetune.add_argument("--set", action="append", metavar="KEY=VALUE", help="dotted override, e.g. train.max_steps=300")
    finetune.add_argument("--answers", type=int, default=1000, help="VQA: answer vocabulary size")
    finetune.add_argument("--generative", action="store_true", help="vqa: train answer generation (for --method rank) instead of a classifier")
    finetune.set_defaults(func=cmd_finetune)

    evaluate = sub.add_parser("evaluate", help="evaluate a run on a downstream task")
    evaluate.add_argument("task", choices=EVAL_TASKS)
    evaluate.add_argument("--run-dir", required=True)
    evaluate.add_argument("--split", action="append", help="split (repeatable; default: the config's eval_splits)")
    evaluate.add_argument("--k-test", type=int, default=16, help="retrieval: ITM re-ranks each query's ITC top k")
    evaluate.add_argument("--method", choices=["classifier", "rank", "generate"], default="classifier", help="vqa: answer classifier, decoder ranking of the answer list, or open-vocabulary generation")
    evaluate.add_argument("--beams", type=int, default=3, help="captioning: beam size (1 = greedy)")
    evaluate.add_argument("--answers", type=int, default=1000, help="vqa --method rank: candidate answers")
    evaluate.add_argument("--device", default="auto")
    evaluate.set_defaults(func=cmd_evaluate)
