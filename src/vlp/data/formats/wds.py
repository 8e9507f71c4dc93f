"""WebDataset shards as img2dataset writes them: ``.tar`` files of ``{key}.jpg`` + ``{key}.txt``
and/or ``{key}.json`` members.

Reading goes through a ``ShardIndex``: one pass over the tar *headers* (``tarfile`` seeks over
member data) records, per sample, where its image and caption members lie. The index is what makes
the streaming dataset's exact resume cheap (skip consumed samples by position, no decoding), and
lets conversion and inspection read members by offset. Members are grouped by key the way
``webdataset`` does it: the key is the member path up to the first dot of its file name.

Captions of a sample: the ``captions`` (list) / ``caption`` / ``text`` field of its ``.json``, else
the lines of its ``.txt``. The ``.json`` may also carry ``image_id``, ``split`` and ``filepath``
(the original relative image path), which our writer stores so conversions round-trip.
"""

from __future__ import annotations

import json
import os
import tarfile
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import webdataset

from vlp.data.formats.common import IMAGE_EXTENSIONS, ImageSample, ReencodeStats, check_new_name, encode_image
from vlp.data.readers import _normalise_splits, normalise_caption
from vlp.data.records import DataFormatError, ReadStats

__all__ = ["expand_shards", "ShardIndex", "read_wds", "write_wds", "sample_captions"]


def expand_shards(spec: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Shard files of a spec: a brace pattern (``data/{00000..00009}.tar``), a directory (its
    ``*.tar`` files, sorted), one ``.tar`` file, or a list of these. Missing files are an error
    that names them (a typo in a brace range should not silently train on less data)."""
    import braceexpand

    items = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    shards: list[Path] = []
    for item in items:
        text = os.fspath(item)
        if Path(text).is_dir():
            found = sorted(Path(text).glob("*.tar"))
            if not found:
                raise FileNotFoundError(f"{text}: no .tar shards in this directory")
            shards.extend(found)
            continue
        expanded = [Path(p) for p in braceexpand.braceexpand(text)]
        missing = [p for p in expanded if not p.is_file()]
        if missing:
            listed = ", ".join(map(str, missing[:3])) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
            raise FileNotFoundError(f"{len(missing)} of {len(expanded)} shards of {text!r} do not exist: {listed}")
        shards.extend(expanded)
    if not shards:
        raise FileNotFoundError(f"no shards in {spec!r}")
    return shards


def _split_key(name: str) -> tuple[str, str]:
    directory, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{directory}/{stem}" if directory else stem), (ext.lower() if dot else "")


@dataclass
class ShardIndex:
    """Where every sample of a list of shards lies, as flat numpy arrays (cheap to pickle into
    DataLoader workers, and no per-sample Python objects to un-share after a fork).

    Row ``i`` is one sample with an image member: ``shard[i]`` indexes ``shards``; ``*_offset`` /
    ``*_size`` locate the image, ``.txt`` and ``.json`` members (-1 when absent). Rows keep shard
    order then member order. ``no_image`` counts keys without an image member (left out).
    """

    shards: list[Path]
    keys: list[str]
    image_ext: list[str]
    shard: np.ndarray
    image_offset: np.ndarray
    image_size: np.ndarray
    txt_offset: np.ndarray
    txt_size: np.ndarray
    json_offset: np.ndarray
    json_size: np.ndarray
    shard_counts: np.ndarray  # samples per shard
    no_image: int

    @classmethod
    def build(cls, shards: Sequence[Path]) -> ShardIndex:
        keys: list[str] = []
        exts: list[str] = []
        cols: list[list[int]] = [[] for _ in range(7)]  # shard, img off/size, txt off/size, json off/size
        counts = []
        no_image = 0
        for s, shard in enumerate(shards):
            members: dict[str, dict[str, tuple[int, int]]] = {}
            try:
                with tarfile.open(shard, mode="r:") as tar:
                    for info in tar:
                        if info.isfile():
                            key, ext = _split_key(info.name)
                            members.setdefault(key, {})[ext] = (info.offset_data, info.size)
            except (tarfile.TarError, OSError) as e:
                raise DataFormatError(f"{shard}: not a readable (uncompressed) tar shard: {e}") from e
            count = 0
            for key, found in members.items():
                image_ext = next((e for e in IMAGE_EXTENSIONS if e in found), None)
                if image_ext is None:
                    no_image += 1
                    continue
                txt, js = found.get("txt", (-1, -1)), found.get("json", (-1, -1))
                for col, value in zip(cols, (s, *found[image_ext], *txt, *js)):
                    col.append(value)
                keys.append(key)
                exts.append(image_ext)
                count += 1
            counts.append(count)
        arrays = [np.asarray(c, dtype=np.int64) for c in cols]
        return cls(list(shards), keys, exts, *arrays, np.asarray(counts, dtype=np.int64), no_image)

    def __len__(self) -> int:
        return len(self.keys)

    def read(self, row: int, member: str, handles: dict[int, object] | None = None) -> bytes | None:
        """The bytes of ``member`` (``"image"``, ``"txt"``, ``"json"``) of sample ``row``; None if absent.
        ``handles`` caches open files per shard across calls (the caller closes them)."""
        offset = int(getattr(self, f"{member}_offset")[row])
        if offset < 0:
            return None
        size = int(getattr(self, f"{member}_size")[row])
        shard = int(self.shard[row])
        if handles is None:
            with open(self.shards[shard], "rb") as f:
                f.seek(offset)
                return f.read(size)
        f = handles.get(shard)
        if f is None:
            f = handles[shard] = open(self.shards[shard], "rb")
        f.seek(offset)  # type: ignore[attr-defined]
        return f.read(size)  # type: ignore[attr-defined]

    def where(self, row: int) -> str:
        return f"{self.shards[int(self.shard[row])]}:{self.keys[row]}.{self.image_ext[row]}"


def sample_captions(txt: bytes | None, meta: dict | None, where: str) -> list[str]:
    """Raw captions of one sample (not yet normalised): the json's ``captions`` / ``caption`` /
    ``text``, else the ``.txt`` lines."""
    if meta:
        for key in ("captions", "caption", "text"):
            if key in meta:
                value = meta[key]
                captions = [value] if isinstance(value, str) else value
                if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
                    raise DataFormatError(f"{where}.json: {key}: expected a string or a list of strings, got {value!r:.60}")
                return captions
    if txt is None:
        return []
    try:
        return txt.decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise DataFormatError(f"{where}.txt: not UTF-8 text: {e}") from e


def load_meta(data: bytes | None, where: str) -> dict | None:
    if data is None:
        return None
    try:
        meta = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataFormatError(f"{where}.json: invalid JSON: {e}") from e
    if not isinstance(meta, dict):
        raise DataFormatError(f"{where}.json: expected an object, got {type(meta).__name__}")
    return meta


def read_wds(
    spec: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    split: str = "train",
    splits: Collection[str] | None = None,
    stats: ReadStats | None = None,
    index: ShardIndex | None = None,
) -> Iterator[ImageSample]:
    """Samples of the shards (image bytes in memory), in shard order. A sample's split is its
    json ``split``, else ``split``; image id its json ``image_id``, else its row in the index.
    Empty captions and caption-less samples are skipped and counted in ``stats`` (filled when the
    iterator is exhausted; keys without an image count as ``missing_images``)."""
    index = index if index is not None else ShardIndex.build(expand_shards(spec))
    wanted = _normalise_splits(splits)
    counts = ReadStats(missing_images=index.no_image)
    handles: dict[int, object] = {}
    try:
        for row in range(len(index)):
            where = f"{index.shards[int(index.shard[row])]}:{index.keys[row]}"
            meta = load_meta(index.read(row, "json", handles), where)
            sample_split = meta.get("split", split) if meta else split
            if wanted is not None and sample_split not in wanted:
                continue
            raws = sample_captions(index.read(row, "txt", handles), meta, where)
            captions = tuple(c for c in (normalise_caption(r) for r in raws) if c)
            counts.empty_captions += len(raws) - len(captions)
            if not captions:
                counts.images_without_captions += 1
                continue
            image_id = meta.get("image_id", row) if meta else row
            name = meta.get("filepath") if meta else None
            if not _safe_name(name):
                name = f"{index.keys[row].rsplit('/', 1)[-1]}.{index.image_ext[row]}"
            data = index.read(row, "image", handles)
            counts.images += 1
            counts.captions += len(captions)
            yield ImageSample(int(image_id), str(sample_split), captions, name, data=data)
    finally:
        for f in handles.values():
            f.close()  # type: ignore[attr-defined]
        if stats is not None:
            for field, value in vars(counts).items():
                setattr(stats, field, value)


def _safe_name(name: object) -> bool:
    if not isinstance(name, str) or not name:
        return False
    pure = PurePosixPath(name)
    return not pure.is_absolute() and ".." not in pure.parts


def write_wds(
    samples: Iterable[ImageSample],
    out_dir: str | os.PathLike[str],
    *,
    samples_per_shard: int = 1000,
    image_format: str | None = None,
    stats: ReencodeStats | None = None,
) -> list[Path]:
    """Write ``out_dir/00000.tar``, ``00001.tar``, ... with img2dataset's layout: key
    ``{shard:05d}{index:04d}``, members ``{key}.{ext}`` (the image, unchanged unless
    ``image_format``), ``{key}.txt`` (the captions, one per line) and ``{key}.json`` (``key``,
    ``caption``, ``captions``, ``image_id``, ``split``, ``filepath``). Returns the shard paths."""
    if samples_per_shard < 1:
        raise ValueError(f"samples_per_shard must be >= 1, got {samples_per_shard}")
    base = Path(out_dir)
    base.mkdir(parents=True, exist_ok=True)
    stats = stats if stats is not None else ReencodeStats()
    digits = max(4, len(str(samples_per_shard - 1)))
    names: set[str] = set()
    shards: list[Path] = []
    writer = None
    count = 0
    try:
        for sample in samples:
            encoded = encode_image(sample, image_format, stats)
            if encoded is None:
                continue
            name, data = encoded
            check_new_name(names, name, base)
            shard, index = divmod(count, samples_per_shard)
            if index == 0:
                if writer is not None:
                    writer.close()
                shards.append(base / f"{shard:05d}.tar")
                writer = webdataset.TarWriter(str(shards[-1]), mtime=0.0)
            key = f"{shard:05d}{index:0{digits}d}"
            meta = {
                "key": key, "caption": sample.captions[0] if sample.captions else "", "captions": list(sample.captions),
                "image_id": sample.image_id, "split": sample.split, "filepath": name,
            }
            ext = PurePosixPath(name).suffix.lstrip(".").lower() or "jpg"
            writer.write({  # type: ignore[union-attr]
                "__key__": key,
                ext: data if data is not None else sample.read_bytes(),
                "txt": "\n".join(sample.captions),
                "json": meta,
            })
            count += 1
    finally:
        if writer is not None:
            writer.close()
    return shards
