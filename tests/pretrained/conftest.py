"""Fixtures of the importer tests: a tiny CLIP byte-level BPE vocabulary in the files OpenAI/HF ship."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from vlp.data.tokenizer import TextTokenizer

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


CAPTIONS = ["a red circle left of a blue square", "two green triangles", "a small yellow star above a circle"]


def _make_run(run_dir: Path, preset: str) -> TextTokenizer:
    """A run directory as `vlp train` leaves it (config, tokenizer, one checkpoint), without training."""
    from vlp.experiment.build import build_task
    from vlp.experiment.config import with_vocab_size
    from vlp.experiment.presets import experiment_preset
    from vlp.experiment.run import save_config
    from vlp.train.checkpoint import TrainerState, save_checkpoint

    tokenizer = TextTokenizer.train_wordpiece(CAPTIONS, vocab_size=120)
    cfg = with_vocab_size(experiment_preset(preset), tokenizer.vocab_size)
    task = build_task(cfg)
    with torch.no_grad():  # move weights away from their init, so a load that silently skipped them would show
        for param in task.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    save_config(cfg, run_dir)
    tokenizer.save(run_dir / "tokenizer")
    optimizer = torch.optim.SGD(task.parameters(), lr=0.1)
    save_checkpoint(run_dir / "checkpoints", task, optimizer, TrainerState(step=1))
    return tokenizer


@pytest.fixture
def make_run() -> Callable[[Path, str], TextTokenizer]:
    """Writes a run directory as `vlp train` leaves it (config, tokenizer, one checkpoint) without training."""
    return _make_run


def rewrite_weights(file: Path, drop: tuple[str, ...] = (), put: dict[str, torch.Tensor] | None = None) -> None:
    """Break a safetensors file on purpose: drop keys and put (new or reshaped) tensors."""
    from safetensors.torch import load_file, save_file

    weights = load_file(str(file))
    for key in drop:
        del weights[key]
    weights.update(put or {})
    save_file(weights, str(file))


@pytest.fixture
def break_weights() -> Callable[..., None]:
    return rewrite_weights


def assert_caption_lm_matches(theirs, ours, ids, mask, pixels, image_tokens: int = 0, label_smoothing: float = 0.0) -> None:
    """A transformers captioner (BLIP, GIT) vs our decode path: LM logits at the real text positions
    and the caption loss, fp32 within 1e-5. ``image_tokens``: leading logits of theirs to skip (GIT
    returns logits for its image positions too).

    Padded positions (never read by the loss) differ: our masks let every query see itself
    (fusion.base.with_self), so a padding query attends to its own key, which Hugging Face masks out.
    """
    from vlp.objectives.lm import lm_loss

    labels = ids.masked_fill(mask == 0, -100)
    with torch.no_grad():
        ref = theirs(input_ids=ids, attention_mask=mask, pixel_values=pixels, labels=labels)
        logits = ours.lm_logits(ours.decode(ours.image_features(pixels), ids, mask, mode="causal"))
    real = mask.bool()
    torch.testing.assert_close(logits[real], ref.logits[:, image_tokens:][real], atol=1e-5, rtol=0)
    torch.testing.assert_close(lm_loss(logits, ids, mask, label_smoothing), ref.loss, atol=1e-5, rtol=0)


@pytest.fixture
def caption_lm_matches() -> Callable[..., None]:
    return assert_caption_lm_matches
