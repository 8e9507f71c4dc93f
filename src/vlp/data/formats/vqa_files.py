"""VQA in and out: VQAv2's two JSON files and a one-object-per-question JSONL, converted both ways.

=======  ======================================================================================
vqav2    ``questions.json`` (``{"questions": [{question_id, image_id, question, image}]}``) +
         ``annotations.json`` (``{"annotations": [{question_id, image_id, answers: [{answer,
         answer_id}], multiple_choice_answer, answer_type, question_type}]}``), read by
         ``vlp.data.vqa.read_vqa``; a source is a folder holding both (or ``*questions*.json`` /
         ``*annotations*.json``) or the questions file plus ``annotations=``.
jsonl    ``{"image", "question", "answers": [...], "question_id"}`` per line, optionally
         ``image_id``, ``answer_type``, ``question_type``, ``multiple_choice_answer``. Also read:
         a ``.json`` list of such objects, answers given as ``{"answer": ...}`` objects, and a
         single ``"answer"`` string. That covers VizWiz-VQA's annotation files (a JSON list with
         ``answers: [{answer, answer_confidence}]`` and no ids) and our ``consensus_answers.json``.
=======  ======================================================================================

Writers do not copy images (VQA annotation files are converted far more often than COCO's 13 GB
of images are moved): each question's ``image`` is written relative to the written file's folder,
which is where readers resolve it from by default, so A -> B -> A points at the same files.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from vlp.data.readers import _abs, _load_json
from vlp.data.records import DataFormatError
from vlp.data.vqa import VQAReadStats, VQARecord, majority_answer, read_vqa, report_skips

__all__ = ["VQA_FORMATS", "read_vqa_jsonl", "read_vqa_records", "vqav2_files", "write_vqa_jsonl", "write_vqa_records", "write_vqav2"]

VQA_FORMATS = ("vqav2", "jsonl")


def check_vqa_format(fmt: str) -> str:
    if fmt not in VQA_FORMATS:
        raise ValueError(f"unknown VQA format {fmt!r}; known: {', '.join(VQA_FORMATS)}")
    return fmt


def _one(folder: Path, exact: str, pattern: str) -> Path | None:
    if (folder / exact).is_file():
        return folder / exact
    found = sorted(folder.glob(pattern))
    if len(found) > 1:
        raise DataFormatError(f"{folder}: several {pattern} files ({', '.join(p.name for p in found)}); name the questions file")
    return found[0] if found else None


def vqav2_files(src: str | os.PathLike[str], annotations: str | os.PathLike[str] | None = None) -> tuple[Path, Path | None]:
    """(questions, annotations or None) of a VQAv2 source: a folder, or the questions file."""
    path = Path(src)
    if path.is_dir():
        questions = _one(path, "questions.json", "*questions*.json")
        if questions is None:
            raise DataFormatError(f"{path}: no questions.json (or *questions*.json) in this folder")
        return questions, Path(annotations) if annotations is not None else _one(path, "annotations.json", "*annotations*.json")
    if not path.is_file():
        raise DataFormatError(f"{path}: no such file or folder")
    return path, Path(annotations) if annotations is not None else None


def read_vqa_records(
    fmt: str,
    src: str | os.PathLike[str],
    image_root: str | os.PathLike[str] | None = None,
    *,
    annotations: str | os.PathLike[str] | None = None,
    stats: VQAReadStats | None = None,
) -> list[VQARecord]:
    """Records of a VQA source in ``fmt``; ``image_root`` defaults to the (questions) file's folder."""
    if check_vqa_format(fmt) == "vqav2":
        questions, answers = vqav2_files(src, annotations)
        return read_vqa(questions, answers, image_root, stats=stats)
    return read_vqa_jsonl(src, image_root, stats=stats)


def _objects(file: Path) -> Iterator[tuple[str, Any]]:
    if file.suffix.lower() == ".json":
        data = _load_json(file)
        if not isinstance(data, list):
            raise DataFormatError(f"{file}: expected a JSON list of question objects, got {type(data).__name__}")
        yield from ((f"[{i}]", obj) for i, obj in enumerate(data))
        return
    try:
        with open(file, encoding="utf-8") as f:
            for n, line in enumerate(f, start=1):
                if line.strip():
                    try:
                        yield f"line {n}", json.loads(line)
                    except json.JSONDecodeError as e:
                        yield f"line {n}", DataFormatError(f"{file}: line {n}: invalid JSON: {e}")
    except UnicodeDecodeError as e:
        raise DataFormatError(f"{file}: not UTF-8 text: {e}") from e


def _text(obj: dict[str, Any], key: str, where: str, required: bool = True) -> str:
    value = obj.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise DataFormatError(f"{where}.{key}: expected a non-empty string, got {value!r:.60}")
    return value.strip()


def _int_or_none(obj: dict[str, Any], key: str, where: str) -> int | None:
    value = obj.get(key)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise DataFormatError(f"{where}.{key}: expected an integer, got {value!r:.60}")
    return value


def _answers(obj: dict[str, Any], where: str) -> tuple[str, ...]:
    if "answers" not in obj:
        return (_text(obj, "answer", where),) if "answer" in obj else ()
    raw = obj["answers"]
    if not isinstance(raw, list) or not raw:
        raise DataFormatError(f"{where}.answers: expected a non-empty list, got {raw!r:.60}")
    answers = []
    for k, a in enumerate(raw):
        answer = a.get("answer") if isinstance(a, dict) else a
        if not isinstance(answer, str):
            raise DataFormatError(f"{where}.answers[{k}]: expected a string or {{\"answer\": string}}, got {a!r:.60}")
        answers.append(answer)
    return tuple(answers)


def read_vqa_jsonl(
    path: str | os.PathLike[str], image_root: str | os.PathLike[str] | None = None, *, stats: VQAReadStats | None = None
) -> list[VQARecord]:
    """Questions of a ``.jsonl`` (or ``.json`` list). A missing ``question_id`` is the entry's
    position; a missing ``image_id`` numbers distinct images in order of first appearance (enough
    to group an image's questions; give ids to join with caption files). Bad entries, missing
    images and questions without answers among answered ones are skipped and counted, as ``read_vqa`` does."""
    file = Path(path)
    if not file.is_file():
        raise DataFormatError(f"{file}: no such file")
    root = _abs(file.parent if image_root is None else Path(image_root))
    skips: dict[str, list[str]] = {"malformed": [], "missing": [], "unannotated": []}
    records: list[VQARecord] = []
    seen: set[int] = set()
    image_ids: dict[str, int] = {}
    position = -1
    for position, (where_short, obj) in enumerate(_objects(file)):
        where = f"{file}: {where_short}"
        try:
            if isinstance(obj, DataFormatError):
                raise obj
            if not isinstance(obj, dict):
                raise DataFormatError(f"{where}: expected an object, got {type(obj).__name__}")
            image, question = _text(obj, "image", where), _text(obj, "question", where)
            qid = _int_or_none(obj, "question_id", where)
            qid = position if qid is None else qid
            if qid in seen:
                raise DataFormatError(f"{where}.question_id: duplicate id {qid}")
            image_id = _int_or_none(obj, "image_id", where)
            image_id = image_ids.setdefault(image, len(image_ids)) if image_id is None else image_id
            answers = _answers(obj, where)
            fields = {k: _text(obj, k, where, required=False) for k in ("answer_type", "question_type", "multiple_choice_answer")}
        except DataFormatError as e:
            skips["malformed"].append(str(e))
            continue
        seen.add(qid)
        if answers and not fields["multiple_choice_answer"]:
            fields["multiple_choice_answer"] = majority_answer(answers)
        image_path = _abs(root / image)
        if not image_path.is_file():
            skips["missing"].append(f"{where}: image {image_path} not found")
            continue
        records.append(VQARecord(qid, image_id, image_path, question, answers, **fields))
    if not records and skips["malformed"] and len(skips["malformed"]) == position + 1:
        raise DataFormatError(f"no entry of {file} is a VQA question (a caption file?); first: {skips['malformed'][0]}")
    if any(r.answers for r in records):  # a test file has no answers at all; a train file lacking some is broken
        skips["unannotated"] = [f"{file}: question_id {r.question_id} has no answers" for r in records if not r.answers]
        records = [r for r in records if r.answers]
    report_skips(skips, file, len(records), stats)
    return records


def _image_ref(record: VQARecord, folder: Path) -> str:
    return Path(os.path.relpath(record.path, _abs(folder))).as_posix()


def write_vqa_jsonl(records: Iterable[VQARecord], dst: str | os.PathLike[str]) -> Path:
    """One line per question; optional fields are written only where they have a value."""
    out = Path(dst)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        for r in records:
            obj: dict[str, Any] = {"image": _image_ref(r, out.parent), "question": r.question}
            if r.answers:
                obj["answers"] = list(r.answers)
            obj.update(question_id=r.question_id, image_id=r.image_id)
            obj.update({k: v for k, v in (("answer_type", r.answer_type), ("question_type", r.question_type),
                                          ("multiple_choice_answer", r.multiple_choice_answer)) if v})
            f.write(json.dumps(obj, ensure_ascii=False) + "\n")
    return out


def write_vqav2(records: Iterable[VQARecord], dst: str | os.PathLike[str]) -> list[Path]:
    """``questions.json`` and, if any question has answers, ``annotations.json`` in the folder ``dst``."""
    folder = Path(dst)
    folder.mkdir(parents=True, exist_ok=True)
    questions, annotations = [], []
    for r in records:
        questions.append({"image_id": r.image_id, "question": r.question, "question_id": r.question_id, "image": _image_ref(r, folder)})
        if r.answers:
            annotations.append({
                "question_id": r.question_id, "image_id": r.image_id,
                "answers": [{"answer": a, "answer_id": k + 1} for k, a in enumerate(r.answers)],
                "multiple_choice_answer": r.multiple_choice_answer, "answer_type": r.answer_type, "question_type": r.question_type,
            })
    written = [_dump(folder / "questions.json", {"questions": questions})]
    if annotations:
        written.append(_dump(folder / "annotations.json", {"annotations": annotations}))
    return written


def _dump(path: Path, obj: Any) -> Path:
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return path


def write_vqa_records(fmt: str, records: Sequence[VQARecord], dst: str | os.PathLike[str]) -> list[Path]:
    """``dst``: a ``.jsonl`` file for jsonl, a folder for vqav2."""
    if check_vqa_format(fmt) == "vqav2":
        return write_vqav2(records, dst)
    return [write_vqa_jsonl(records, dst)]
