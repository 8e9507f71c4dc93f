"""Caption decoding speed: greedy and beam-3, 20 new tokens for a batch of 16 images, with and
without the KV cache, for the small GIT and BLIP presets; and the same for Hugging Face's
`GitForCausalLM.generate` / `BlipForConditionalGeneration.generate` at matching random configs
(same widths, depths, heads, vocabulary, image size; parameter counts printed side by side).

Every run generates exactly 20 tokens (min_new_tokens = max_new_tokens), so EOS cannot make one
side stop early. Times are the best of ``--repeats`` runs. Run:
    .venv/bin/python benchmarks/bench_generation.py [--threads 1 --repeats 3 --device cpu]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from vlp.generation import GenerationConfig, generate
from vlp.models.image_text import ImageTextModel, build_model, count_parameters
from vlp.models.presets import DIMS, model_preset

VOCAB, BOS, EOS, PAD = 1000, 1, 2, 0


def ours(family: str) -> ImageTextModel:
    cfg = model_preset(f"{family}_small")
    cfg.text_encoder.vocab_size = VOCAB
    return build_model(cfg).eval()


def hf_git() -> torch.nn.Module:
    from transformers import GitConfig, GitForCausalLM

    d = DIMS["small"]
    vision = dict(hidden_size=d.width, intermediate_size=4 * d.width, num_hidden_layers=d.image_depth,
                  num_attention_heads=d.heads, image_size=d.image_size, patch_size=d.patch_size)
    cfg = GitConfig(vision_config=vision, vocab_size=VOCAB, hidden_size=d.width, num_hidden_layers=d.fusion_depth,
                    num_attention_heads=d.heads, intermediate_size=4 * d.width, max_position_embeddings=d.max_length,
                    bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD)
    return GitForCausalLM(cfg).eval()


def hf_blip() -> torch.nn.Module:
    from transformers import BlipConfig, BlipForConditionalGeneration

    d = DIMS["small"]
    text = dict(vocab_size=VOCAB, hidden_size=d.width, encoder_hidden_size=d.width, intermediate_size=4 * d.width,
                num_hidden_layers=d.text_depth, num_attention_heads=d.heads, max_position_embeddings=d.max_length,
                bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD, sep_token_id=EOS)
    vision = dict(hidden_size=d.width, intermediate_size=4 * d.width, num_hidden_layers=d.image_depth,
                  num_attention_heads=d.heads, image_size=d.image_size, patch_size=d.patch_size)
    return BlipForConditionalGeneration(BlipConfig(text_config=text, vision_config=vision)).eval()


def best_of(repeats: int, fn: Callable[[], object], sync: Callable[[], None]) -> float:
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-hf", action="store_true", help="skip the transformers comparison")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize()) if device.type == "cuda" else (lambda: None)
    size = DIMS["small"].image_size
    pixels = torch.randn(args.batch, 3, size, size, device=device)
    builders = {"git": hf_git, "blip": hf_blip}
    print(f"batch {args.batch}, {args.tokens} new tokens, image {size}px, vocab {VOCAB}, device {args.device}, "
          f"threads {args.threads}, best of {args.repeats}")
    print(f"{'model':6} {'decoding':8} {'params':>9} {'cached s':>9} {'uncached s':>10} {'speed-up':>8} "
          f"{'HF params':>9} {'HF cached s':>11} {'HF uncached s':>13} {'HF/ours':>7}")
    for family in ("git", "blip"):
        model = ours(family).to(device)
        hf = None if args.no_hf else builders[family]().to(device)
        for name, beams in (("greedy", 1), ("beam-3", 3)):
            row: dict[str, float] = {}
            for cached in (True, False):
                cfg = GenerationConfig(max_new_tokens=args.tokens, min_new_tokens=args.tokens, strategy="beam" if beams > 1 else "greedy",
                                       num_beams=beams, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD, use_cache=cached)
                with torch.no_grad():
                    out = generate(model, pixels, cfg)
                assert out.sequences.shape == (args.batch, args.tokens)
                row[f"ours_{cached}"] = best_of(args.repeats, lambda: generate(model, pixels, cfg), sync)
                if hf is not None:
                    kw = dict(max_new_tokens=args.tokens, min_new_tokens=args.tokens, num_beams=beams, do_sample=False, use_cache=cached)
                    with torch.no_grad():
                        hf_out = hf.generate(pixel_values=pixels, **kw)
                    assert hf_out.shape[1] >= args.tokens, hf_out.shape

                    def run_hf() -> None:
                        with torch.no_grad():
                            hf.generate(pixel_values=pixels, **kw)

                    row[f"hf_{cached}"] = best_of(args.repeats, run_hf, sync)
            hf_cols = (f"{count_parameters(hf):>9,} {row['hf_True']:>11.3f} {row['hf_False']:>13.3f} "
                       f"{row['hf_True'] / row['ours_True']:>7.2f}") if hf is not None else ""
            print(f"{family:6} {name:8} {count_parameters(model):>9,} {row['ours_True']:>9.3f} {row['ours_False']:>10.3f} "
                  f"{row['ours_False'] / row['ours_True']:>8.2f} {hf_cols}")


if __name__ == "__main__":
    main()
