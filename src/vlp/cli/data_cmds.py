"""`vlp data convert` and `vlp data inspect`: argument parsing and wiring only (the work is in
``vlp.data.formats`` and ``vlp.data.inspect``)."""

from __future__ import annotations

import argparse
import sys
import warnings


def _separator(text: str) -> str:
    named = {"\\t": "\t", "tab": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}
    sep = named.get(text, text)
    if len(sep) != 1:
        raise argparse.ArgumentTypeError(f"the separator must be one character (or tab/comma/semicolon/pipe), got {text!r}")
    return sep


def _add_format_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("format options (each format uses its own)")
    group.add_argument("--image-root", help="root of relative image paths (default: the annotation file's folder)")
    group.add_argument("--csv-img-key", default="filepath", help="csv/tsv image column (open_clip's name; default filepath)")
    group.add_argument("--csv-caption-key", default="title", help="csv/tsv caption column (default title)")
    group.add_argument("--separator", type=_separator, help="csv/tsv separator (default ',' for csv, tab for tsv)")
    group.add_argument("--split-key", default="split", help="csv/tsv split column, used when present")
    group.add_argument("--split", default="train", help="split of entries that name none (coco, csv without split column, folder)")
    group.add_argument("--split-dirs", action="store_true", help="folder: the first directory level is the split")
    group.add_argument("--image-key", default="image", help="jsonl image field (default image)")
    group.add_argument("--splits", help="only these splits, comma-separated")


def _options(args: argparse.Namespace):
    from vlp.data.formats import FormatOptions

    return FormatOptions(
        image_root=args.image_root, csv_image_key=args.csv_img_key, csv_caption_key=args.csv_caption_key,
        separator=args.separator, split_key=args.split_key, split=args.split, split_dirs=args.split_dirs,
        image_key=args.image_key, samples_per_shard=getattr(args, "samples_per_shard", 1000),
        image_format=getattr(args, "image_format", None),
    )


def _splits(args: argparse.Namespace) -> list[str] | None:
    return [s.strip() for s in args.splits.split(",") if s.strip()] if args.splits else None


def cmd_convert(args: argparse.Namespace) -> int:
    from vlp.data.formats import ReencodeStats, read_samples, write_samples
    from vlp.data.records import DataFormatError, DataWarning, ReadStats

    read, encoded = ReadStats(), ReencodeStats()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DataWarning)
            samples = read_samples(args.from_format, args.src, _options(args), _splits(args), stats=read)
            written = write_samples(args.to_format, samples, args.dst, _options(args), stats=encoded)
    except (DataFormatError, ValueError) as err:
        print(f"vlp: error: {err}", file=sys.stderr)
        return 2
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    print(f"converted {read.images} images, {read.captions} captions: {args.from_format} {args.src} -> {args.to_format} {args.dst}")
    print(f"  images copied unchanged {encoded.copied}, re-encoded {encoded.reencoded}, unreadable (left out) {encoded.unreadable}")
    skipped = {k: v for k, v in vars(read).items() if k not in ("images", "captions") and v}
    if skipped:
        print("  skipped while reading: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in skipped.items()))
    for path in written[:10]:
        print(f"  wrote {path}")
    if len(written) > 10:
        print(f"  ... and {len(written) - 10} more")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from vlp.data.inspect import format_report, inspect_dataset
    from vlp.data.records import DataFormatError

    try:
        report = inspect_dataset(args.format, args.path, _options(args), _splits(args), decode=args.decode, hash_files=not args.no_hash)
    except (DataFormatError, ValueError) as err:
        print(f"vlp: error: {err}", file=sys.stderr)
        return 2
    print(format_report(report))
    return 0


def register(data: argparse._SubParsersAction) -> None:
    """Add `convert` and `inspect` to the `vlp data` sub-command group."""
    from vlp.data.formats import FORMATS

    convert = data.add_parser("convert", help="convert an image-caption dataset between formats")
    convert.add_argument("src", help="source: annotation file, image folder, or shards (dir, .tar, brace pattern)")
    convert.add_argument("dst", help="destination: a file for csv/tsv/jsonl, a directory otherwise")
    convert.add_argument("--from", dest="from_format", required=True, choices=FORMATS)
    convert.add_argument("--to", dest="to_format", required=True, choices=FORMATS)
    convert.add_argument("--samples-per-shard", type=int, default=1000, help="wds: samples per .tar shard")
    convert.add_argument("--image-format", choices=["jpg", "png"], help="re-encode images in other formats (default: copy bytes)")
    _add_format_options(convert)
    convert.set_defaults(func=cmd_convert)

    inspect = data.add_parser("inspect", help="counts, histograms and problems of a dataset")
    inspect.add_argument("path")
    inspect.add_argument("--format", default="karpathy", choices=FORMATS)
    inspect.add_argument("--decode", action="store_true", help="fully decode every image (finds truncated files; slower)")
    inspect.add_argument("--no-hash", action="store_true", help="skip hashing image files for byte-identical duplicates")
    _add_format_options(inspect)
    inspect.set_defaults(func=cmd_inspect)
