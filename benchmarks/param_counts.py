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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--families", default=",".join(FAMILIES))
    args = parser.parse_args()
    reference = dict(PUBLISHED)
    clip_ref = open_clip_reference()
    if clip_ref is not None:
        reference["clip"] = clip_ref
    print(f"{'preset':<16}{'ours':>14}{'published':>14}{'diff':>9}  source")
    for family in args.families.split(","):
        with torch.device("meta"):  # shapes only: no memory, no init time
            ours = count_parameters(build_model(model_preset(f"{family}_base")))
        gc.collect()
        if family in reference:
            published, source = reference[family]
            diff = 100.0 * (ours - published) / published
            print(f"{family + '_base':<16}{ours / 1e6:>13.1f}M{published / 1e6:>13.1f}M{diff:>8.1f}%  {source}")
        else:
            print(f"{family + '_base':<16}{ours / 1e6:>13.1f}M{'-':>14}{'-':>9}  (no published count compared)")


if __name__ == "__main__":
    main()
