"""Tiny seeded language models for the generation tests: every preset family with an LM head, plus
VLP's unified seq2seq stack (region inputs with padded regions) and UFO/VLMo with an LM head.

Weights are the preset's initialisation plus seeded noise (std 0.15): a freshly initialised model
predicts an almost uniform distribution, where cached and uncached decoding could pick different
tokens on a rounding difference and beam search would have nothing to find.
"""

from __future__ import annotations

import pytest
import torch

from vlp.encoders import RegionInputs
from vlp.models.image_text import ImageTextModel, build_model
from vlp.models.presets import FAMILIES, REGION_FAMILIES, model_preset

PAD, BOS, EOS = 0, 1, 2
VOCAB = 40

LM_FAMILIES = sorted(family for family in FAMILIES if model_preset(f"{family}_tiny").heads.lm)
# LM-capable stacks no preset turns on: VLP's unified seq2seq transformer, and UFO/VLMo's shared
# transformer (VLMo: modality experts), each with an LM head.
EXTRA_CASES = ("vlp+lm", "ufo+lm", "vlmo+lm")
CASES = tuple(LM_FAMILIES) + EXTRA_CASES
SEQ2SEQ_CASES = tuple(case for case in CASES if case not in ("blip",))  # blip_text decodes causally only


def build_lm(case: str, vocab: int = VOCAB, seed: int = 0, noise: float = 0.15) -> ImageTextModel:
    family = case.split("+")[0]
    cfg = model_preset(f"{family}_tiny")
    cfg.text_encoder.vocab_size = vocab
    if case.endswith("+lm"):
        cfg.heads.lm = True
    if family == "vlmo":
        cfg.fusion.depth = 2  # one layer with text/image experts below the VL-expert layer: both routes run
    torch.manual_seed(seed)
    model = build_model(cfg).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=gen) * noise)
    return model


def images(case: str, batch: int, seed: int = 0) -> torch.Tensor | RegionInputs:
    gen = torch.Generator().manual_seed(seed)
    if case.split("+")[0] in REGION_FAMILIES:
        mask = torch.ones(batch, 5, dtype=torch.long)
        mask[::2, 3:] = 0  # every other image has two padded regions
        boxes = torch.rand(batch, 5, 4, generator=gen).sort(-1).values
        return RegionInputs(torch.randn(batch, 5, 256, generator=gen), boxes, mask)
    return torch.randn(batch, 3, 32, 32, generator=gen)


def select_images(inputs: torch.Tensor | RegionInputs, rows: list[int]) -> torch.Tensor | RegionInputs:
    if isinstance(inputs, RegionInputs):
        return RegionInputs(inputs.features[rows], inputs.boxes[rows], inputs.mask[rows])
    return inputs[rows]


class LMKit:
    """What the tests need, handed out as a fixture (tests import no helper modules under
    ``--import-mode=importlib``): token ids, seeded models (memoised) and images."""

    PAD, BOS, EOS, VOCAB = PAD, BOS, EOS, VOCAB
    images = staticmethod(images)
    select_images = staticmethod(select_images)

    def __init__(self) -> None:
        self._built: dict[tuple[str, int, int], ImageTextModel] = {}

    def model(self, case: str, vocab: int = VOCAB, seed: int = 0) -> ImageTextModel:
        key = (case, vocab, seed)
        if key not in self._built:
            self._built[key] = build_lm(case, vocab, seed)
        return self._built[key]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Decoding tiny models is hundreds of microsecond-sized ops: a second intra-op thread only adds
    synchronisation (10-100x slower on a loaded machine). Restored for the rest of the suite."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def lm() -> LMKit:
    return LMKit()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``case``: every LM-capable model; ``seq2seq_case``: those that can also run a prefix LM."""
    if "case" in metafunc.fixturenames:
        metafunc.parametrize("case", CASES)
    if "seq2seq_case" in metafunc.fixturenames:
        metafunc.parametrize("seq2seq_case", SEQ2SEQ_CASES)
