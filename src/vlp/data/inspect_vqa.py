"""``vlp data inspect --kind vqa``: questions, images, answers and problems of a VQA file.

What matters before fine-tuning a VQA classifier: how many questions have the full 10 human
answers (VQA accuracy with fewer is coarser: one answer gives 0 or 1), the answer types, the most
common majority answers (the classifier's vocabulary), the question lengths, and what the reader
skipped (malformed entries, missing images, questions without annotations).
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from dataclasses import dataclass, field

from vlp.data.formats.vqa_files import read_vqa_records
from vlp.data.inspect import _histogram
from vlp.data.records import DataWarning
from vlp.data.vqa import VQAReadStats
from vlp.metrics.vqa import normalize_answer

__all__ = ["ANSWER_BINS", "QUESTION_BINS", "VQAReport", "format_vqa_report", "inspect_vqa"]

ANSWER_BINS = (0, 1, 2, 5, 10, 11)  # answers per question: 0, 1, 2-4, 5-9, 10, 11+
QUESTION_BINS = (0, 4, 6, 8, 10, 15)  # words per question


@dataclass
class VQAReport:
    source: str
    format: str
    read: VQAReadStats = field(default_factory=VQAReadStats)
    images: int = 0
    answers_per_question: list[int] = field(default_factory=lambda: [0] * len(ANSWER_BINS))
    question_words: list[int] = field(default_factory=lambda: [0] * len(QUESTION_BINS))
    answer_types: dict[str, int] = field(default_factory=dict)
    top_answers: list[tuple[str, int]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # the reader's skip warnings (they name entries)


def _bin(value: int, edges: tuple[int, ...]) -> int:
    return max(i for i, edge in enumerate(edges) if value >= edge)


def inspect_vqa(
    fmt: str, path: str | os.PathLike[str], image_root: str | os.PathLike[str] | None = None,
    *, annotations: str | os.PathLike[str] | None = None, top: int = 10,
) -> VQAReport:
    report = VQAReport(str(path), fmt)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)  # counted in report.read, shown in the report
        records = read_vqa_records(fmt, path, image_root, annotations=annotations, stats=report.read)
    report.warnings = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    report.images = len({r.path for r in records})
    for r in records:
        report.answers_per_question[_bin(len(r.answers), ANSWER_BINS)] += 1
        report.question_words[_bin(len(r.question.split()), QUESTION_BINS)] += 1
    report.answer_types = dict(Counter(r.answer_type or "(none)" for r in records if r.answers).most_common())
    report.top_answers = Counter(normalize_answer(r.multiple_choice_answer) for r in records if r.answers).most_common(top)
    return report


def format_vqa_report(report: VQAReport) -> str:
    r = report.read
    lines = [f"VQA   {report.source}  (format {report.format})", "",
             f"questions   {r.questions}", f"images      {report.images}", ""]
    lines += _histogram("answers per question", ANSWER_BINS, report.answers_per_question, "answers")
    lines.append("")
    lines += _histogram("question length", QUESTION_BINS, report.question_words, "words")
    lines += ["", "answer types"] + [f"  {t:<20}{n:>8}" for t, n in report.answer_types.items()]
    lines += ["", "most common answers (normalised majority answer)"] + [f"  {a:<20}{n:>8}" for a, n in report.top_answers]
    lines += ["", "problems"]
    for name, count in (("malformed entries", r.malformed), ("missing image files", r.missing_images),
                        ("questions without annotation", r.unannotated)):
        lines.append(f"  {name:<38}{count:>8}")
    lines += [f"    {w}" for w in report.warnings]
    return "\n".join(lines)
