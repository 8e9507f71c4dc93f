"""Fixtures of the importer tests: a tiny CLIP byte-level BPE vocabulary in the files OpenAI/HF ship."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

MERGES = [("c", "a"), ("ca", "t</w>"), ("m", "a"), ("ma", "t</w>"), ("o", "n</w>"), ("d", "o"), ("do", "g</w>")]


def byte_symbols() -> list[str]:
    """GPT-2/CLIP's reversible byte -> printable unicode table (256 symbols)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes, extra = keep[:], 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


def write_clip_vocab(directory: Path) -> Path:
    symbols = byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in MERGES] + ["<|startoftext|>", "<|endoftext|>"]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}), encoding="utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in MERGES) + "\n", encoding="utf-8")
    return directory


@pytest.fixture
def clip_vocab() -> Callable[[Path], Path]:
    """Writes vocab.json + merges.txt (523 tokens: bytes, bytes</w>, 7 merges, SOT=519, EOT=520)."""
    return write_clip_vocab
