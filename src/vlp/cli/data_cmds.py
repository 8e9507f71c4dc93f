"""`vlp data convert` and `vlp data inspect`: argument parsing and wiring only (the work is in
``vlp.data.formats`` and ``vlp.data.inspect*``).

``--kind`` picks what the files hold: ``captions`` (image-caption datasets, the default), ``vqa``
(questions and answers) or ``regions`` (detector features + boxes); each kind has its own formats,
and ``--from`` / ``--to`` / ``--format`` are checked against them."""

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


KINDS = ("captions", "vqa", "regions")


def _kind_formats(kind: str) -> tuple[str, ...]:
    from vlp.data.formats import FORMATS
    from vlp.data.formats.region_files import REGION_FORMATS
    from vlp.data.formats.vqa_files import VQA_FORMATS

    return {"captions": FORMATS, "vqa": VQA_FORMATS, "regions": REGION_FORMATS}[kind]


def _check_kind_format(kind: str, fmt: str, flag: str) -> None:
    formats = _kind_formats(kind)
    if fmt not in formats:
        raise ValueError(f"{flag} {fmt!r} is not a {kind} format; --kind {kind} knows: {', '.join(formats)}")


def _add_kind_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kind", choices=KINDS, default="captions", help="what the files hold (default captions)")
    group = parser.add_argument_group("vqa and regions options")
    group.add_argument("--annotations", help="vqa/vqav2: the annotations JSON when SRC is the questions file")
    group.add_argument("--tsv-fields", help="regions/tsv: column names of a header-less TSV, comma-separated "
                       "(default image_id,image_w,image_h,num_boxes,boxes,features)")
    group.add_argument("--boxes", choices=["keep", "normalised", "pixels"], default="keep",
                       help="regions: convert boxes by the image size (default keep)")


def _region_options(args: argparse.Namespace):
    from vlp.data.formats.region_files import RegionOptions

    fields = tuple(f.strip() for f in args.tsv_fields.split(",")) if args.tsv_fields else None
    return RegionOptions(
        tsv_fields=fields, boxes=args.boxes, feature_dtype=getattr(args, "feature_dtype", "float32"),
        images_per_shard=getattr(args, "images_per_shard", 2000),
    )


def _splits(args: argparse.Namespace) -> list[str] | None:
    return [s.strip() for s in args.splits.split(",") if s.strip()] if args.splits else None


def _convert_regions(args: argparse.Namespace) -> list[str]:
    from vlp.data.formats.region_files import RegionReadStats, read_regions, write_regions

    options, stats = _region_options(args), RegionReadStats()
    written = write_regions(args.to_format, read_regions(args.from_format, args.src, options, stats=stats), args.dst, options)
    lines = [f"converted {stats.images} images, {stats.regions} regions (feature dim {stats.feature_dim}): "
             f"{args.from_format} {args.src} -> {args.to_format} {args.dst}"]
    if stats.malformed:
        lines.append(f"  skipped while reading: malformed rows {stats.malformed}")
    return lines + [f"  wrote {p}" for p in written]


def _convert_vqa(args: argparse.Namespace) -> list[str]:
    from vlp.data.formats.vqa_files import read_vqa_records, write_vqa_records
    from vlp.data.vqa import VQAReadStats

    stats = VQAReadStats()
    records = read_vqa_records(args.from_format, args.src, args.image_root, annotations=args.annotations, stats=stats)
    written = write_vqa_records(args.to_format, records, args.dst)
    answered = sum(1 for r in records if r.answers)
    lines = [f"converted {stats.questions} questions ({answered} with answers) on {len({r.path for r in records})} images: "
             f"{args.from_format} {args.src} -> {args.to_format} {args.dst}"]
    skipped = {k: v for k, v in vars(stats).items() if k != "questions" and v}
    if skipped:
        lines.append("  skipped while reading: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in skipped.items()))
    return lines + [f"  wrote {p}" for p in written]


def cmd_convert(args: argparse.Namespace) -> int:
    from vlp.data.formats import ReencodeStats, read_samples, write_samples
    from vlp.data.records import DataFormatError, DataWarning, ReadStats

    if args.kind != "captions":
        try:
            _check_kind_format(args.kind, args.from_format, "--from")
            _check_kind_format(args.kind, args.to_format, "--to")
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", DataWarning)
                lines = (_convert_regions if args.kind == "regions" else _convert_vqa)(args)
        except (DataFormatError, ValueError) as err:
            print(f"vlp: error: {err}", file=sys.stderr)
            return 2
        for w in caught:
            print(f"warning: {w.message}", file=sys.stderr)
        print("\n".join(lines))
        return 0
    read, encoded = ReadStats(), ReencodeStats()
    try:
        _check_kind_format("captions", args.from_format, "--from")
        _check_kind_format("captions", args.to_format, "--to")
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


def _guess_vqa_format(path: str) -> str:
    """jsonl for ``.jsonl`` and for a ``.json`` that opens with a list; vqav2 otherwise (a folder, a questions object)."""
    from pathlib import Path

    p = Path(path)
    if p.suffix.lower() == ".jsonl":
        return "jsonl"
    if p.is_file() and p.suffix.lower() == ".json":
        with open(p, encoding="utf-8", errors="replace") as f:
            head = f.read(256).lstrip()
        return "jsonl" if head.startswith("[") else "vqav2"
    return "vqav2"


def _inspect_text(args: argparse.Namespace) -> str:
    if args.kind == "regions":
        from vlp.data.formats.region_files import guess_region_format
        from vlp.data.inspect_regions import format_region_report, inspect_regions

        fmt = args.format or guess_region_format(args.path)
        _check_kind_format("regions", fmt, "--format")
        return format_region_report(inspect_regions(fmt, args.path, _region_options(args)))
    if args.kind == "vqa":
        from vlp.data.inspect_vqa import format_vqa_report, inspect_vqa

        fmt = args.format or _guess_vqa_format(args.path)
        _check_kind_format("vqa", fmt, "--format")
        return format_vqa_report(inspect_vqa(fmt, args.path, args.image_root, annotations=args.annotations))
    from vlp.data.inspect import format_report, inspect_dataset

    fmt = args.format or "karpathy"
    _check_kind_format("captions", fmt, "--format")
    return format_report(inspect_dataset(fmt, args.path, _options(args), _splits(args), decode=args.decode, hash_files=not args.no_hash))


def cmd_inspect(args: argparse.Namespace) -> int:
    from vlp.data.records import DataFormatError

    try:
        text = _inspect_text(args)
    except (DataFormatError, ValueError) as err:
        print(f"vlp: error: {err}", file=sys.stderr)
        return 2
    print(text)
    return 0


def register(data: argparse._SubParsersAction) -> None:
    """Add `convert` and `inspect` to the `vlp data` sub-command group."""
    formats = "; ".join(f"{kind}: {', '.join(_kind_formats(kind))}" for kind in KINDS)
    convert = data.add_parser("convert", help="convert a dataset (captions, VQA or region features) between formats")
    convert.add_argument("src", help="source: annotation file, image folder, shards (dir, .tar, brace pattern), "
                         "VQAv2 folder, region TSV / npz folder / safetensors")
    convert.add_argument("dst", help="destination: a file for csv/tsv/jsonl (and a region .tsv / .safetensors), a directory otherwise")
    convert.add_argument("--from", dest="from_format", required=True, metavar="FORMAT", help=f"source format ({formats})")
    convert.add_argument("--to", dest="to_format", required=True, metavar="FORMAT", help="destination format, of the same kind")
    convert.add_argument("--samples-per-shard", type=int, default=1000, help="wds: samples per .tar shard")
    convert.add_argument("--image-format", choices=["jpg", "png"], help="re-encode images in other formats (default: copy bytes)")
    _add_kind_options(convert)
    convert.add_argument("--feature-dtype", choices=["float32", "float16", "bfloat16"], default="float32",
                         help="regions to vlp: stored feature type (default float32, lossless)")
    convert.add_argument("--images-per-shard", type=int, default=2000,
                         help="regions to vlp into a folder: images per safetensors shard (default 2000; a .safetensors DST holds all in memory)")
    _add_format_options(convert)
    convert.set_defaults(func=cmd_convert)

    inspect = data.add_parser("inspect", help="counts, histograms and problems of a dataset")
    inspect.add_argument("path")
    inspect.add_argument("--format", metavar="FORMAT", help=f"{formats} (default: karpathy for captions, "
                         "guessed from the path for vqa and regions)")
    inspect.add_argument("--decode", action="store_true", help="fully decode every image (finds truncated files; slower)")
    inspect.add_argument("--no-hash", action="store_true", help="skip hashing image files for byte-identical duplicates")
    _add_kind_options(inspect)
    _add_format_options(inspect)
    inspect.set_defaults(func=cmd_inspect)
