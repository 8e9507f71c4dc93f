"""Writing the scenes dataset to disk: images in worker processes, JSON files atomically, manifest last.

Layout of `out_dir`:

    images/{split}/{split}_{index:06d}.png
    dataset_coco.json                 Karpathy-style captions for all splits
    vqa/questions_{split}.json        VQAv2 questions
    vqa/annotations_{split}.json      VQAv2 annotations (10 answers each)
    foils_{split}.json                test and test_novel: one false twin per caption
    objects_{split}.json              COCO detection format with shape/colour/size attributes
    manifest.json                     generator version, parameters, counts, held-out combos

The manifest is deleted first and written last, so a generation that was interrupted is never
mistaken for a cached one (`scenes_are_cached`).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlp.data.scenes.example import CATEGORY_IDS, FOIL_SPLITS, SPLITS, Records, image_filename, make_example
from vlp.data.scenes.vocab import COLOUR_NAMES, HELD_OUT_COMBOS, SHAPES

GENERATOR = "vlp.data.scenes"
# Bump whenever the output for the same parameters changes, so old caches are regenerated.
GENERATOR_VERSION = 1
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 32, 224
CHUNK_SIZE = 250


@dataclass(frozen=True)
class _Job:
    out_dir: str
    seed: int
    split: str
    start: int
    stop: int
    id_offset: int
    image_size: int


def _run_job(job: _Job) -> Records:
    folder = Path(job.out_dir) / "images" / job.split
    records = Records()
    for index in range(job.start, job.stop):
        image, _, example = make_example(job.seed, job.split, index, job.id_offset + index, job.image_size)
        image.save(folder / image_filename(job.split, index), format="PNG", compress_level=3)
        records.extend(example)
    return records


def _params(
    seed: int, image_size: int, num_train: int, num_val: int, num_test: int, num_test_novel: int
) -> dict[str, int]:
    params = {
        "seed": seed,
        "image_size": image_size,
        "num_train": num_train,
        "num_val": num_val,
        "num_test": num_test,
        "num_test_novel": num_test_novel,
    }
    for name, value in params.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {value!r}")
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    if not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE:
        raise ValueError(f"image_size must be in [{MIN_IMAGE_SIZE}, {MAX_IMAGE_SIZE}], got {image_size}")
    return params


def _split_sizes(params: dict[str, int]) -> dict[str, int]:
    return {split: params[f"num_{split}"] for split in SPLITS}


def _write_json(path: Path, obj: Any, *, indent: int | None = None) -> None:
    """Write via a temporary file and os.replace, so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    separators = (",", ":") if indent is None else (",", ": ")
    # json.dumps, not json.dump: only the one-shot encoder runs in C (5x faster on big files).
    text = json.dumps(obj, ensure_ascii=False, indent=indent, separators=separators)
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text + "\n")
    os.replace(tmp, path)


def _pool_context() -> multiprocessing.context.BaseContext:
    # fork starts workers in milliseconds and needs no `if __name__ == "__main__"` guard in the
    # caller's script; the workers only touch numpy and PIL, never the parent's torch threads.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if sys.platform.startswith("linux") and "fork" in methods else "spawn")


def _run_jobs(jobs: list[_Job], workers: int) -> Iterator[Records]:
    """Chunk results in job order, whatever the number of workers."""
    if workers <= 1 or len(jobs) <= 1:
        yield from map(_run_job, jobs)
        return
    with _pool_context().Pool(processes=min(workers, len(jobs))) as pool:
        yield from pool.imap(_run_job, jobs)


def generate_scenes(
    out_dir: str | Path,
    *,
    seed: int = 0,
    image_size: int = 64,
    num_train: int = 10000,
    num_val: int = 500,
    num_test: int = 1000,
    num_test_novel: int = 1000,
    workers: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Generate the captioned-scenes dataset into `out_dir` and return it as a Path.

    Output is a pure function of the parameters (and GENERATOR_VERSION): byte-identical JSON and
    identical pixels for any `workers`. `workers` defaults to min(2, cpu count); `progress`
    receives a human-readable line roughly every 10 % of the images.
    """
    params = _params(seed, image_size, num_train, num_val, num_test, num_test_novel)
    if workers is None:
        workers = min(2, os.cpu_count() or 1)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    say = progress or (lambda _line: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").unlink(missing_ok=True)
    (out / "vqa").mkdir(exist_ok=True)

    sizes = _split_sizes(params)
    jobs, offset = [], 0
    for split in SPLITS:
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        for start in range(0, sizes[split], CHUNK_SIZE):
            jobs.append(_Job(str(out), seed, split, start, min(start + CHUNK_SIZE, sizes[split]), offset, image_size))
        offset += sizes[split]

    total = sum(sizes.values())
    began = time.perf_counter()
    say(f"[scenes] generating {total} images of {image_size}px into {out} with {workers} worker(s)")
    by_split = {split: Records() for split in SPLITS}
    done, reported = 0, 0
    for job, records in zip(jobs, _run_jobs(jobs, workers)):
        by_split[job.split].extend(records)
        done += job.stop - job.start
        if 10 * done // total > reported and done < total:  # about every 10 %
            reported = 10 * done // total
            say(f"[scenes] {done}/{total} images ({100 * done // total}%), {time.perf_counter() - began:.1f}s")

    _write_outputs(out, params, by_split)
    say(f"[scenes] done: {total} images in {time.perf_counter() - began:.1f}s")
    return out


def _write_outputs(out: Path, params: dict[str, int], by_split: dict[str, Records]) -> None:
    karpathy = [entry for split in SPLITS for entry in by_split[split].karpathy]
    _write_json(out / "dataset_coco.json", {"dataset": "scenes", "images": karpathy})
    categories = [{"id": cid, "name": shape, "supercategory": "shape"} for shape, cid in CATEGORY_IDS.items()]
    for split, rec in by_split.items():
        _write_json(out / "vqa" / f"questions_{split}.json", {"questions": rec.questions})
        _write_json(out / "vqa" / f"annotations_{split}.json", {"annotations": rec.answers})
        detection = {"images": rec.coco_images, "annotations": rec.coco_objects, "categories": categories}
        _write_json(out / f"objects_{split}.json", detection)
        if split in FOIL_SPLITS:
            _write_json(out / f"foils_{split}.json", rec.foils)
    counts = {
        split: {
            "images": len(rec.karpathy),
            "captions": sum(len(e["sentences"]) for e in rec.karpathy),
            "questions": len(rec.questions),
            "objects": len(rec.coco_objects),
            **({"foils": len(rec.foils)} if split in FOIL_SPLITS else {}),
        }
        for split, rec in by_split.items()
    }
    manifest = {
        "generator": GENERATOR,
        "version": GENERATOR_VERSION,
        "params": params,
        "counts": counts,
        "held_out_combos": [{"colour": c, "shape": s} for c, s in HELD_OUT_COMBOS],
        "shapes": list(SHAPES),
        "colours": list(COLOUR_NAMES),
    }
    _write_json(out / "manifest.json", manifest, indent=2)  # last: marks the dataset complete


def scenes_are_cached(
    out_dir: str | Path,
    *,
    seed: int = 0,
    image_size: int = 64,
    num_train: int = 10000,
    num_val: int = 500,
    num_test: int = 1000,
    num_test_novel: int = 1000,
    workers: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> bool:
    """True iff `out_dir` holds a complete generation with these parameters and this generator version.

    Takes the same keywords as generate_scenes (workers and progress do not change the output
    and are ignored), so callers can pass one dict to both.
    """
    del workers, progress
    try:
        params = _params(seed, image_size, num_train, num_val, num_test, num_test_novel)
        manifest = json.loads((Path(out_dir) / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        isinstance(manifest, dict)
        and manifest.get("generator") == GENERATOR
        and manifest.get("version") == GENERATOR_VERSION
        and manifest.get("params") == params
        and (Path(out_dir) / "dataset_coco.json").is_file()
    )
