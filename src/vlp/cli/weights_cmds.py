"""`vlp convert-weights` and `vlp export`: pretrained weights into vlp's self-contained format.

Wiring only: the work is `vlp.pretrained.load_pretrained`, `save_pretrained` and `export_model`.
"""

from __future__ import annotations

import argparse
from typing import Any


def cmd_convert_weights(args: argparse.Namespace) -> int:
    from vlp.pretrained import PRETRAINED_SOURCES, load_pretrained, save_pretrained

    options: dict[str, Any] = {}
    if args.config:
        options["config"] = args.config
    if args.tokenizer:
        options["tokenizer"] = args.tokenizer
    if args.quick_gelu is not None:
        options["quick_gelu"] = args.quick_gelu == "true"
    if args.model_name:
        options["model_name"] = args.model_name
    if args.image_size:
        options["image_size"] = args.image_size
    if args.source not in PRETRAINED_SOURCES:
        raise ValueError(f"unknown source {args.source!r}; available: {', '.join(PRETRAINED_SOURCES.names())}")
    model, tokenizer = load_pretrained(args.source, args.path, **options)
    out = save_pretrained(model, tokenizer, args.out)
    params = sum(p.numel() for p in model.parameters())
    print(f"{args.source} {args.path} -> {out} ({type(model).__name__}, {params:,} parameters, "
          f"{'tokenizer ' + str(tokenizer.vocab_size) if tokenizer else 'no tokenizer'})")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from vlp.pretrained import export_model

    out = export_model(args.run_dir, args.out_dir, checkpoint=args.checkpoint)
    print(f"exported {args.run_dir} -> {out} (load with vlp.load_pretrained('vlp', {str(out)!r}))")
    return 0


def _guard(func):
    """PretrainedError/ValueError -> the CLI's `vlp: error:` line and exit code 2, like the other commands."""

    def run(args: argparse.Namespace) -> int:
        import sys

        try:
            return func(args)
        except ValueError as err:
            print(f"vlp: error: {err}", file=sys.stderr)
            return 2

    return run


def register(sub: Any) -> None:
    convert = sub.add_parser("convert-weights", help="import pretrained weights (HF CLIP, open_clip, HF BLIP, HF GIT, HF BERT/RoBERTa/MiniLM, timm) into vlp's format")
    convert.add_argument("source", help="hf-clip | open_clip | hf-blip | hf-git | hf-text | timm | vlp")
    convert.add_argument("path", help="the weights: a Hugging Face directory or a weights file")
    convert.add_argument("out", help="output directory (model.safetensors + config.json + tokenizer)")
    convert.add_argument("--config", help="open_clip: its model-config JSON")
    convert.add_argument("--tokenizer", help="open_clip: directory with CLIP's vocab.json + merges.txt")
    convert.add_argument("--quick-gelu", choices=["true", "false"], help="open_clip: override the activation")
    convert.add_argument("--model-name", help="timm: the model name the weights belong to")
    convert.add_argument("--image-size", type=int, help="timm: input resolution")
    convert.set_defaults(func=_guard(cmd_convert_weights))

    export = sub.add_parser("export", help="a training run's model -> model.safetensors + config.json + tokenizer")
    export.add_argument("run_dir")
    export.add_argument("out_dir")
    export.add_argument("--checkpoint", help="a checkpoint directory (default: the newest valid one)")
    export.set_defaults(func=_guard(cmd_export))
