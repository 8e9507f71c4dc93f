"""The `vlp` command line: argument parsing and wiring only; the work lives in the library."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from vlp.cli import data_cmds
from vlp.config import ConfigError, apply_overrides, load_yaml_config, to_dict


def _experiment_config(args: argparse.Namespace):
    from vlp.experiment.presets import experiment_preset

    if args.config:
        cfg = load_yaml_config(args.config, experiment_preset)
    else:
        cfg = experiment_preset(args.preset)  # unknown names raise with the nearest ones
    return apply_overrides(cfg, args.set or [])


def cmd_data_scenes(args: argparse.Namespace) -> int:
    from vlp.data.scenes import generate_scenes

    out = generate_scenes(
        args.out, seed=args.seed, image_size=args.image_size, num_train=args.num_train, num_val=args.num_val,
        num_test=args.num_test, num_test_novel=args.num_test_novel, workers=args.workers, progress=print,
    )
    print(f"scenes written to {out}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from vlp.experiment.run import train_experiment

    cfg = _experiment_config(args)
    run_dir = Path(args.run_dir or f"runs/{cfg.name}")
    result = train_experiment(cfg, run_dir, resume=args.resume)
    print(f"trained to step {result.step} (loss {result.loss:.4f}) in {result.seconds:.0f}s; checkpoint {result.checkpoint}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from vlp.experiment.run import evaluate_run, format_metrics_table, write_run_report

    run_dir = Path(args.run_dir)
    results, galleries = evaluate_run(run_dir, splits=args.split, checkpoint=Path(args.checkpoint) if args.checkpoint else None, device=args.device)
    print(format_metrics_table(results))
    if args.report:
        print(f"report: {write_run_report(run_dir, results, galleries)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from vlp.experiment.demo import run_demo

    run_demo(Path(args.run_dir), overrides=args.set or [], preset=args.preset)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from dataclasses import replace

    import torch

    from vlp.models import MODEL_PRESETS, build_model, count_parameters, model_preset

    sizes = set(args.size or ["tiny", "small", "base"])
    print(f"{'preset':<18}{'parameters':>16}  fusion / objectives-relevant heads   (text vocabulary {args.vocab_size} where the preset leaves it to the tokenizer)")
    for name in MODEL_PRESETS.names():
        if name.rsplit("_", 1)[1] not in sizes:
            continue
        cfg = model_preset(name)
        if cfg.text_encoder.vocab_size is None:
            cfg = replace(cfg, text_encoder=replace(cfg.text_encoder, vocab_size=args.vocab_size))
        with torch.device("meta"):  # shapes only: counting a base model costs no memory or init time
            count = count_parameters(build_model(cfg))
        heads = [h for h in ("itm", "mlm", "lm") if getattr(cfg.heads, h)] + (["itc"] if cfg.contrastive else [])
        print(f"{name:<18}{count:>16,}  {cfg.image_encoder.kind} + {cfg.text_encoder.kind} -> {cfg.fusion.kind}"
              f"{' + ' + cfg.decoder.kind if cfg.decoder.kind != 'none' else ''} [{', '.join(heads)}]")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    import yaml

    print(yaml.safe_dump(to_dict(_experiment_config(args)), sort_keys=False), end="")
    return 0


def _add_experiment_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="experiment YAML: `preset: NAME` plus overrides")
    parser.add_argument("--preset", default="clip_small", help="experiment preset when no --config is given")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="dotted override, e.g. model.text_encoder.width=256 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlp", description="Vision-language pre-training.")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="dataset utilities").add_subparsers(dest="data_command", required=True)
    scenes = data.add_parser("scenes", help="generate the built-in captioned-scenes dataset")
    scenes.add_argument("--out", required=True)
    scenes.add_argument("--seed", type=int, default=0)
    scenes.add_argument("--image-size", type=int, default=64)
    scenes.add_argument("--num-train", type=int, default=10000)
    scenes.add_argument("--num-val", type=int, default=500)
    scenes.add_argument("--num-test", type=int, default=1000)
    scenes.add_argument("--num-test-novel", type=int, default=1000)
    scenes.add_argument("--workers", type=int, default=None)
    scenes.set_defaults(func=cmd_data_scenes)
    data_cmds.register(data)

    train = sub.add_parser("train", aliases=["pretrain"], help="pre-train a model (one process, or N under torchrun)")
    _add_experiment_args(train)
    train.add_argument("--run-dir", help="output directory (default runs/<name>)")
    train.add_argument("--resume", action="store_true", help="continue from the run's newest valid checkpoint")
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser("eval", help="retrieval recall@K of a trained run")
    evaluate.add_argument("--run-dir", required=True)
    evaluate.add_argument("--split", action="append", help="split to evaluate (repeatable; default: the config's eval_splits)")
    evaluate.add_argument("--checkpoint", help="a checkpoint directory (default: newest valid)")
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--report", action="store_true", help="also write report.html")
    evaluate.set_defaults(func=cmd_eval)

    demo = sub.add_parser("demo", help="scenes -> pre-train -> evaluate -> report (what `make demo` runs)")
    demo.add_argument("--run-dir", default="runs/demo")
    demo.add_argument("--preset", default="clip_small")
    demo.add_argument("--set", action="append", metavar="KEY=VALUE")
    demo.set_defaults(func=cmd_demo)

    models = sub.add_parser("models", help="list model presets with parameter counts")
    models.add_argument("--vocab-size", type=int, default=1000)
    models.add_argument("--size", action="append", choices=["tiny", "small", "base"], help="only these sizes (repeatable)")
    models.set_defaults(func=cmd_models)

    config = sub.add_parser("config", help="print the resolved experiment config")
    _add_experiment_args(config)
    config.set_defaults(func=cmd_config)

    from vlp.cli import adapt_cmds, weights_cmds

    weights_cmds.register(sub)
    adapt_cmds.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # The tokenizer is trained in this process before DataLoader workers fork; Rust's thread pool
    # cannot survive a fork, and `tokenizers` would warn once per worker. Batches are small anyway.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from vlp.data.records import DataFormatError
    from vlp.registry import RegistryError
    from vlp.train import CheckpointError, TrainingInterrupted

    try:
        return int(args.func(args) or 0)
    except (ConfigError, RegistryError, CheckpointError, DataFormatError, FileNotFoundError) as err:
        print(f"vlp: error: {err}", file=sys.stderr)
        return 2
    except TrainingInterrupted as err:
        print(f"vlp: interrupted: {err}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
