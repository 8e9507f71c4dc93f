"""VQAv2 questions + annotations -> records, the answer vocabulary, soft targets, dataset and collator.

The classifier formulation (BUTD, UNITER, ViLT, ALBEF's classifier baseline) treats VQA as
multi-label classification over the most frequent training answers; each question's target for
a candidate answer is that answer's VQA accuracy (``vlp.metrics.vqa.soft_score``), so the loss
rewards exactly what the metric measures. Answers are normalised as the official evaluation
normalises predictions, so "Two", "two" and "2" are one class.

Files: ``questions_*.json`` (``{"questions": [{question_id, image_id, question, [image]}]}``) and
``annotations_*.json`` (``{"annotations": [{question_id, answers: [{answer}...], answer_type,
question_type, multiple_choice_answer}]}``). An image is found, in this order, from the
question's ``image`` field (our samples carry one), from ``image_paths`` (image id -> path, e.g.
from a Karpathy file: ``read_scenes_vqa``), or from the file's ``data_subtype`` and COCO's naming
(``COCO_train2014_000000458752.jpg``). Entries that cannot be used are skipped, counted in
``VQAReadStats`` and reported in one ``DataWarning`` per kind; a file without the top-level list
is a ``DataFormatError``.
"""

from __future__ import annotations

import json
import os
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from vlp.data.batch import Batch
from vlp.data.datasets import _check_index, _ImageTable, _stack, _StringTable
from vlp.data.readers import _abs, _get, _load_json, read_karpathy
from vlp.data.records import DataFormatError, DataWarning
from vlp.data.tokenizer import TextTokenizer
from vlp.metrics.vqa import normalize_answer, soft_score

__all__ = [
    "AnswerVocab",
    "VQABatch",
    "VQACollator",
    "VQADataset",
    "VQAReadStats",
    "VQARecord",
    "join_question_answer",
    "read_scenes_vqa",
    "read_vqa",
]


@dataclass(frozen=True)
class VQARecord:
    """One question about one image, with its human answers (raw, as annotated)."""

    question_id: int
    image_id: int
    path: Path  # absolute path of the image file
    question: str
    answers: tuple[str, ...]  # the (usually 10) human answers; empty for unannotated test questions
    answer_type: str  # "yes/no" | "number" | "other" ("" when unannotated)
    question_type: str  # the question's opening words, as VQAv2 groups them
    multiple_choice_answer: str  # the annotators' most common answer


@dataclass
class VQAReadStats:
    """What ``read_vqa`` returned and what it skipped (fields are overwritten on each read)."""

    questions: int = 0
    missing_images: int = 0  # no file at the resolved path
    malformed: int = 0  # questions or annotations lacking a field or with a wrong type
    unannotated: int = 0  # questions without an annotation (only when annotations were given)


def read_vqa(
    questions_json: str | os.PathLike[str],
    annotations_json: str | os.PathLike[str] | None = None,
    image_root: str | os.PathLike[str] | None = None,
    *,
    image_paths: Mapping[int, str | os.PathLike[str]] | None = None,
    stats: VQAReadStats | None = None,
) -> list[VQARecord]:
    """Read VQAv2 questions (and annotations, if given) into records, in question-file order.

    ``image_root`` defaults to the questions file's directory and resolves relative image paths.
    Without ``annotations_json`` (the test-dev setting) records have no answers.
    """
    qpath = Path(questions_json)
    root = _abs(qpath.parent if image_root is None else Path(image_root))
    qdata = _load_json(qpath)
    questions = _get(qdata, "questions", list, qpath, "top level")
    subtype = qdata.get("data_subtype") if isinstance(qdata, dict) else None
    skips: dict[str, list[str]] = {"malformed": [], "missing": [], "unannotated": []}

    annotations: dict[int, dict[str, Any]] | None = None
    bad_annotations: set[int] = set()  # already counted as malformed; their questions are not counted again
    if annotations_json is not None:
        apath = Path(annotations_json)
        annotations = {}
        for i, entry in enumerate(_get(_load_json(apath), "annotations", list, apath, "top level")):
            qid = entry.get("question_id") if isinstance(entry, dict) else None
            try:
                annotations[_get(entry, "question_id", int, apath, f"annotations[{i}]")] = _annotation(entry, apath, i)
            except DataFormatError as e:
                skips["malformed"].append(str(e))
                if isinstance(qid, int):
                    bad_annotations.add(qid)

    records: list[VQARecord] = []
    seen: set[int] = set()
    for i, entry in enumerate(questions):
        where = f"questions[{i}]"
        try:
            qid = _get(entry, "question_id", int, qpath, where)
            image_id = _get(entry, "image_id", int, qpath, where)
            text = _get(entry, "question", str, qpath, where).strip()
            if not text:
                raise DataFormatError(f"{qpath}: {where}.question: empty")
            if qid in seen:
                raise DataFormatError(f"{qpath}: {where}.question_id: duplicate id {qid}")
            path = _image_path(entry, image_id, root, image_paths, subtype, qpath, where)
        except DataFormatError as e:
            skips["malformed"].append(str(e))
            continue
        seen.add(qid)
        ann: dict[str, Any] = {"answers": (), "answer_type": "", "question_type": "", "multiple_choice_answer": ""}
        if annotations is not None:
            if qid in bad_annotations:
                continue
            if qid not in annotations:
                skips["unannotated"].append(f"{qpath}: {where}: question_id {qid} has no annotation")
                continue
            ann = annotations[qid]
        if not path.is_file():
            skips["missing"].append(f"{qpath}: {where}: image {path} not found")
            continue
        records.append(VQARecord(qid, image_id, path, text, **ann))

    report_skips(skips, qpath, len(records), stats)
    return records


def report_skips(skips: Mapping[str, Sequence[str]], source: Path, returned: int, stats: VQAReadStats | None) -> None:
    """One ``DataWarning`` per kind of skipped entry (naming the first few), and the counts in ``stats``.
    Keys of ``skips``: "malformed", "missing", "unannotated" (every VQA reader skips the same kinds)."""
    for kind, messages in skips.items():
        if messages:
            shown = "; ".join(messages[:3]) + ("; ..." if len(messages) > 3 else "")
            warnings.warn(f"{len(messages)} {kind} entries skipped while reading {source}: {shown}", DataWarning, stacklevel=3)
    if stats is not None:
        stats.questions = returned
        stats.malformed = len(skips.get("malformed", ()))
        stats.missing_images = len(skips.get("missing", ()))
        stats.unannotated = len(skips.get("unannotated", ()))


def read_scenes_vqa(root: str | os.PathLike[str], split: str, *, stats: VQAReadStats | None = None) -> list[VQARecord]:
    """The built-in scenes dataset's VQA split; image paths come from its Karpathy file."""
    root = Path(root)
    images = read_karpathy(root / "dataset_coco.json", splits=split)
    paths = {r.image_id: r.path for r in images}
    vqa = root / "vqa"
    return read_vqa(vqa / f"questions_{split}.json", vqa / f"annotations_{split}.json", root, image_paths=paths, stats=stats)


def _annotation(entry: Any, path: Path, i: int) -> dict[str, Any]:
    where = f"annotations[{i}]"
    raw = _get(entry, "answers", list, path, where)
    answers = tuple(_get(a, "answer", str, path, f"{where}.answers[{k}]") for k, a in enumerate(raw))
    if not answers:
        raise DataFormatError(f"{path}: {where}.answers: empty list")
    # Samples that keep only some fields still read; the majority answer is recomputed if absent.
    fallback = majority_answer(answers)
    return {
        "answers": answers,
        "answer_type": _get(entry, "answer_type", str, path, where, default=""),
        "question_type": _get(entry, "question_type", str, path, where, default=""),
        "multiple_choice_answer": _get(entry, "multiple_choice_answer", str, path, where, default=fallback),
    }


def majority_answer(answers: Sequence[str]) -> str:
    """The most common raw answer (first seen wins a tie): ``multiple_choice_answer`` where a file omits it."""
    return Counter(answers).most_common(1)[0][0]


def _image_path(
    entry: dict[str, Any], image_id: int, root: Path, image_paths: Mapping[int, str | os.PathLike[str]] | None,
    subtype: Any, path: Path, where: str,
) -> Path:
    name = _get(entry, "image", str, path, where, default=None)
    if name is not None:
        return _abs(root / name)  # collapses "../" of refs written relative to another folder
    if image_paths is not None:
        if image_id not in image_paths:
            raise DataFormatError(f"{path}: {where}.image_id: {image_id} is not in the given image_paths")
        return _abs(Path(image_paths[image_id]))
    if isinstance(subtype, str) and subtype:
        return root / f"COCO_{subtype}_{image_id:012d}.jpg"
    raise DataFormatError(
        f"{path}: {where}: no way to find the image (no 'image' field, no image_paths, no top-level 'data_subtype')"
    )


class AnswerVocab:
    """The candidate answers of a classifier: normalised strings, index = output unit.

    Built from training records: the ``size`` most frequent normalised ``multiple_choice_answer``
    values (BUTD/UNITER count that field; ties broken alphabetically so the vocabulary is
    deterministic), optionally only those seen ``min_count`` times. Answers outside it have no
    target, which caps the reachable accuracy; ``coverage`` reports how much.
    """

    def __init__(self, answers: Sequence[str]):
        answers = list(answers)
        if not answers:
            raise ValueError("an answer vocabulary needs at least one answer")
        if len(set(answers)) != len(answers):
            raise ValueError("answer vocabulary entries must be unique")
        self.answers: tuple[str, ...] = tuple(answers)
        self.index: dict[str, int] = {a: i for i, a in enumerate(self.answers)}

    @classmethod
    def from_records(cls, records: Sequence[VQARecord], size: int, min_count: int = 1) -> AnswerVocab:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        counts = Counter(normalize_answer(r.multiple_choice_answer) for r in records if r.answers)
        ranked = sorted((a for a, c in counts.items() if c >= min_count and a), key=lambda a: (-counts[a], a))
        if not ranked:
            raise ValueError(f"no answer occurs {min_count} times in {len(records)} records")
        return cls(ranked[:size])

    def __len__(self) -> int:
        return len(self.answers)

    def __contains__(self, answer: str) -> bool:
        return answer in self.index

    def targets(self, answers: Sequence[str]) -> tuple[list[int], list[float]]:
        """Sparse soft targets of one question: (answer indices, VQA accuracy of each) over the vocabulary."""
        counts = Counter(normalize_answer(a) for a in answers)
        hits = sorted((self.index[a], soft_score(c, len(answers))) for a, c in counts.items() if a in self.index)
        return [i for i, _ in hits], [s for _, s in hits]

    def coverage(self, records: Sequence[VQARecord]) -> float:
        """Fraction of questions whose normalised majority answer is in the vocabulary."""
        annotated = [r for r in records if r.answers]
        if not annotated:
            return 0.0
        return sum(normalize_answer(r.multiple_choice_answer) in self.index for r in annotated) / len(annotated)

    def save(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_text(json.dumps({"answers": list(self.answers)}, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> AnswerVocab:
        path = Path(path)
        return cls(_get(_load_json(path), "answers", list, path, "top level"))


@dataclass
class VQABatch(Batch):
    """A ``Batch`` whose text is the question; ``image_ids`` repeat when one image has several questions.

    ``targets`` [B, A] are the soft scores over the answer vocabulary (classifier fine-tuning);
    ``answer_ids`` / ``answer_mask`` [B, La] the tokenised majority answer, ``[CLS] answer [SEP]``
    (generative fine-tuning; ``join_question_answer`` drops the [CLS]).
    """

    question_ids: torch.Tensor | None = None  # [B] long
    targets: torch.Tensor | None = None  # [B, A] float
    answer_ids: torch.Tensor | None = None  # [B, La] long
    answer_mask: torch.Tensor | None = None  # [B, La] long


class VQADataset(Dataset):
    """One item per question. Item: ``{"pixels", "question", "image_id", "question_id", "target_index",
    "target_score", "answer"}`` or ``None`` when the image is corrupt (the collator counts it).

    Questions, answers and targets are stored as flat arrays (see ``vlp.data.datasets``: forked
    workers keep sharing them). ``vocab=None`` (inference) gives empty targets.
    """

    def __init__(self, records: Sequence[VQARecord], transform: Callable[[Any], torch.Tensor], vocab: AnswerVocab | None = None):
        self._images = _ImageTable(records, transform)  # type: ignore[arg-type]  # reads .path and .image_id
        self._questions = _StringTable([r.question for r in records])
        self._answers = _StringTable([normalize_answer(r.multiple_choice_answer) for r in records])
        self.question_ids = np.fromiter((r.question_id for r in records), dtype=np.int64, count=len(records))
        sparse = [vocab.targets(r.answers) if vocab is not None else ([], []) for r in records]
        self._offsets = np.zeros(len(records) + 1, dtype=np.int64)
        np.cumsum([len(i) for i, _ in sparse], out=self._offsets[1:])
        self._index = np.fromiter((i for idx, _ in sparse for i in idx), dtype=np.int64, count=int(self._offsets[-1]))
        self._score = np.fromiter((s for _, sc in sparse for s in sc), dtype=np.float32, count=int(self._offsets[-1]))
        self.num_answers = len(vocab) if vocab is not None else 0

    def __len__(self) -> int:
        return len(self.question_ids)

    def __getitem__(self, i: int) -> dict[str, Any] | None:
        i = _check_index(i, len(self))
        pixels = self._images.load(i)
        if pixels is None:
            return None
        lo, hi = int(self._offsets[i]), int(self._offsets[i + 1])
        return {
            "pixels": pixels,
            "question": self._questions[i],
            "image_id": int(self._images.image_ids[i]),
            "question_id": int(self.question_ids[i]),
            "target_index": torch.from_numpy(self._index[lo:hi].copy()),
            "target_score": torch.from_numpy(self._score[lo:hi].copy()),
            "answer": self._answers[i],
        }


class VQACollator:
    """``collate_fn`` for ``VQADataset``: stack images, tokenise questions (and answers), densify targets.

    ``num_answers`` sizes ``targets`` (0: no targets); ``answer_length`` > 0 also tokenises each
    question's majority answer for generative fine-tuning. ``max_length`` bounds what the model
    reads: with answers, the joined ``[CLS] q [SEP] a [SEP]``, so questions are cut to
    ``max_length - answer_length + 1`` tokens. Picklable, like ``PairCollator``.
    """

    def __init__(self, tokenizer: TextTokenizer, max_length: int, num_answers: int = 0, answer_length: int = 0):
        if answer_length == 1 or answer_length < 0:
            raise ValueError(f"answer_length must be 0 (no answers) or >= 2, got {answer_length}")
        question_length = max_length - answer_length + 1 if answer_length else max_length
        if question_length < 2:
            raise ValueError(
                f"max_length={max_length} leaves {question_length} tokens for [CLS] question [SEP] after an answer of {answer_length}"
            )
        self.tokenizer = tokenizer
        self.max_length = question_length
        self.num_answers = num_answers
        self.answer_length = answer_length

    def __call__(self, items: list[dict[str, Any] | None]) -> VQABatch:
        kept = [it for it in items if it is not None]
        skipped = len(items) - len(kept)
        if not kept:
            empty = torch.zeros((0, 0), dtype=torch.long)
            return VQABatch(
                pixels=torch.zeros((0, 3, 0, 0)), input_ids=empty, attention_mask=empty.clone(),
                image_ids=torch.zeros((0,), dtype=torch.long), skipped=skipped,
                question_ids=torch.zeros((0,), dtype=torch.long), targets=torch.zeros((0, self.num_answers)),
            )
        input_ids, attention_mask = self.tokenizer.encode_batch([it["question"] for it in kept], self.max_length)
        targets = None
        if self.num_answers:
            targets = torch.zeros(len(kept), self.num_answers)
            for row, it in enumerate(kept):
                targets[row, it["target_index"]] = it["target_score"]
        answer_ids = answer_mask = None
        if self.answer_length:
            answer_ids, answer_mask = self.tokenizer.encode_batch([it["answer"] for it in kept], self.answer_length)
        return VQABatch(
            pixels=_stack([it["pixels"] for it in kept]),
            input_ids=input_ids,
            attention_mask=attention_mask,
            image_ids=torch.tensor([it["image_id"] for it in kept], dtype=torch.long),
            skipped=skipped,
            question_ids=torch.tensor([it["question_id"] for it in kept], dtype=torch.long),
            targets=targets,
            answer_ids=answer_ids,
            answer_mask=answer_mask,
        )


def join_question_answer(
    question_ids: torch.Tensor, question_mask: torch.Tensor, answer_ids: torch.Tensor, answer_mask: torch.Tensor,
    pad_id: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Row r: ``[CLS] question [SEP]`` of ``question_ids[r]`` followed by ``answer [SEP]`` of ``answer_ids[r]``.

    Both inputs are ``encode_batch`` rows (right-padded, starting with [CLS]); the answer's [CLS] is
    dropped, so the row reads like the tokenizer's pair template ``[CLS] q [SEP] a [SEP]``. Returns
    ``(ids [R, L], mask [R, L], prefix_lengths [R])`` where the prefix is the question part: what a
    seq2seq decoder sees bidirectionally and what ranking and the generative loss never score.
    """
    if question_ids.shape[0] != answer_ids.shape[0]:
        raise ValueError(f"{question_ids.shape[0]} questions but {answer_ids.shape[0]} answers")
    answer_ids, answer_mask = answer_ids[:, 1:], answer_mask[:, 1:]
    q_len, a_len = question_mask.sum(1), answer_mask.sum(1)
    rows, length = question_ids.shape[0], int((q_len + a_len).max()) if question_ids.shape[0] else 0
    ids = torch.full((rows, length), pad_id, dtype=question_ids.dtype, device=question_ids.device)
    positions = torch.arange(length, device=ids.device)[None, :]
    in_question = positions < q_len[:, None]
    in_answer = (positions >= q_len[:, None]) & (positions < (q_len + a_len)[:, None])
    ids[in_question] = question_ids[question_mask.bool()]  # row-major order: right padding keeps tokens in place
    ids[in_answer] = answer_ids[answer_mask.bool()]
    return ids, (in_question | in_answer).long(), q_len
