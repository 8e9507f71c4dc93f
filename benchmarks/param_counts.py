"""Parameter counts of the `base` presets against the published models.

Builds each base preset (published dimensions) one at a time on CPU and prints our count next to the
published one, where a paper states one; the source of each reference is printed in the table.
CLIP's reference is counted from open_clip's ViT-B-16 (test-only dependency), built untrained.

    .venv/bin/python benchmarks/param_counts.py [--families clip,albef,...]
"""

from __future__ import annotations

import argparse
import gc

import torch

from vlp.models import FAMILIES, build_model, count_parameters, model_preset

# family -> (published parameters, where the number comes from)
# The paper figures are quoted from memory of the papers (no network here to re-check them); each
# names where it should be found, so a reader can verify.
PUBLISHED: dict[str, tuple[float, str]] = {
    "albef": (209.5e6, "ALBEF paper, Sec. 5 implementation details: BERT-base 123.7M + ViT-B/16 85.8M"),
    "coca": (383e6, "CoCa paper, Table 1 (CoCa-Base: 86M image encoder + 297M text decoder)"),
    "vlmo": (175e6, "VLMo paper, model sizes (VLMo-Base: 175M)"),
    "vilt": (87.4e6, "ViLT paper, Table 6 (ViLT-B/32: 87.4M; apparently without the 23.4M word embeddings)"),
    "uniter": (86e6, "UNITER paper, Table 1 (UNITER-base: 86M; apparently transformer layers only)"),
}


def open_clip_reference() -> tuple[float, str] | None:
    try:
        import open_clip
    except ImportError:
        return None
    model = open_clip.create_model("ViT-B-16", pretrained=None)
    count = sum(p.numel() for p in model.parameters())
    del model
    return float(count), "open_clip ViT-B-16 built untrained (= CLIP ViT-B/16)"


def excluded_from_core(model) -> int:
    """Word-embedding table plus ITM/MLM/LM heads (a tied decoder weight is the embedding, counted once)."""
    seen: set[int] = set()
    total = 0
    raw_text = model._raw_text[0]
    modules = [getattr(getattr(raw_text, "embeddings", None), "word_embeddings", None), model.itm_head, model.mlm_head, model.lm_head]
    for module in modules:
        if module is None:
            continue
        for param in module.parameters():
            if id(param) not in seen:
                seen.add(id(param))
                total += param.numel()
    return total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--families", default=",".join(FAMILIES))
    args = parser.parse_args()
    reference = dict(PUBLISHED)
    clip_ref = open_clip_reference()
    if clip_ref is not None:
        reference["clip"] = clip_ref
    print(f"{'preset':<16}{'ours':>10}{'ours core':>11}{'published':>11}{'diff':>8}{'core diff':>10}  source")
    print("  ('core' = without the word-embedding table and the pre-training heads, the convention ViLT's and")
    print("   UNITER's figures appear to follow: ViT-B/32 without a head is 87.4M, and 12 BERT layers 85M)")
    for family in args.families.split(","):
        with torch.device("meta"):  # shapes only: no memory, no init time
            model = build_model(model_preset(f"{family}_base"))
        ours = count_parameters(model)
        core = ours - excluded_from_core(model)
        del model
        gc.collect()
        if family in reference:
            published, source = reference[family]
            diff = 100.0 * (ours - published) / published
            core_diff = 100.0 * (core - published) / published
            print(f"{family + '_base':<16}{ours / 1e6:>9.1f}M{core / 1e6:>10.1f}M{published / 1e6:>10.1f}M{diff:>7.1f}%{core_diff:>9.1f}%  {source}")
        else:
            print(f"{family + '_base':<16}{ours / 1e6:>9.1f}M{core / 1e6:>10.1f}M{'-':>11}{'-':>8}{'-':>10}  (no published count compared)")


if __name__ == "__main__":
    main()
