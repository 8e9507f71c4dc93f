"""Fusion-model training steps, vlp vs transformers: BLIP (ITC + ITM + LM) and GIT (captioning LM).

BLIP. vlp's `blip_*` preset is one model: ViT + one BERT stack that is the ITC text encoder, the
image-grounded ITM encoder and (own causal self-attention, everything else shared) the LM decoder.
transformers splits BLIP into `BlipForImageTextRetrieval` (ITM/ITC) and
`BlipForConditionalGeneration` (LM), which share nothing. Timing the two separately would charge the
peer a second ViT and a second text stack that BLIP itself does not have, so the peer here is built
the way BLIP trains: one retrieval model, and the captioning model's decoder with its embeddings,
cross-attention and FFN *assigned* the retrieval encoder's modules (BLIP's encoder/decoder tying;
only self-attention stays separate) and reading the retrieval model's image features. One step is
ITC + ITM + LM summed, one backward, one AdamW step, exactly as vlp's `PretrainTask`. ITM pairs: B
positives and 2B ITC-mined hard negatives, chosen on both sides by the same vlp sampler with the
same generator, so both fuse the same 3B pairs.

GIT. vlp's `git_*` preset (ViT + self-attention decoder over [text; image], post-norm, tied LM head)
vs `GitForCausalLM` with a matching config (GELU instead of CLIP's quick-GELU, no dropout, tied
output). transformers applies its LM head to every position, image tokens included, and then
drops those logits; vlp projects the text positions only -- the table shows both row counts.

Parameter counts are printed side by side; the residual differences are listed in RESULTS.md.

    .venv/bin/python benchmarks/bench_fusion_step.py [--models blip,git] [--sizes tiny,small] [--dtypes fp32,bf16]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from harness import (
    PAIR_HEADER, PAIR_LEGEND, add_arguments, adamw, append_jsonl, banner, compare_in_subprocesses, interleaved, pair_cells, parameter_count, parse_or_work,
    random_batch, rss_after, worker_args, zero_grad_step,
)
from machine import load_average
from vlp.data.batch import Batch
from vlp.models import ModelConfig, build_model, model_preset
from vlp.objectives import build_itm_pairs, lm_targets, sample_hard_negatives
from vlp.tasks.pretrain import ObjectivesConfig, PretrainTask
from vlp.train.optim import parameter_groups

VOCAB = 30524  # BLIP's BERT vocabulary (+ [DEC] and [ENC]); GIT uses BERT's, the size barely matters
BATCH = {"tiny": 64, "small": 32}
OBJECTIVES = {"blip": ObjectivesConfig(itc=1.0, itm=1.0, lm=1.0), "git": ObjectivesConfig(itc=0.0, lm=1.0)}


def vlp_config(model: str, size: str) -> ModelConfig:
    cfg = model_preset(f"{model}_{size}")
    cfg.text_encoder.vocab_size = VOCAB
    return cfg


def _vision_dims(cfg: ModelConfig) -> dict:
    vit = cfg.image_encoder
    return dict(hidden_size=vit.width, intermediate_size=int(vit.width * vit.mlp_ratio), num_hidden_layers=vit.depth,
                num_attention_heads=vit.num_heads, image_size=vit.image_size, patch_size=vit.patch_size)


class PeerBLIP(nn.Module):
    """transformers' two BLIP models with BLIP's sharing restored (see the module docstring)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        from transformers import BlipConfig, BlipForConditionalGeneration, BlipForImageTextRetrieval

        fusion = cfg.fusion
        text = dict(vocab_size=VOCAB, hidden_size=cfg.text_encoder.width, encoder_hidden_size=cfg.image_encoder.width,
                    intermediate_size=int(cfg.text_encoder.width * fusion.mlp_ratio), num_hidden_layers=fusion.depth,
                    num_attention_heads=fusion.num_heads, max_position_embeddings=cfg.text_encoder.max_length)
        config = BlipConfig(text_config=text, vision_config=_vision_dims(cfg), image_text_hidden_size=cfg.embed_dim)
        self.retrieval = BlipForImageTextRetrieval(config)
        captioner = BlipForConditionalGeneration(config)
        decoder = captioner.text_decoder
        encoder = self.retrieval.text_encoder
        decoder.bert.embeddings = encoder.embeddings
        for dec_layer, enc_layer in zip(decoder.bert.encoder.layer, encoder.encoder.layer, strict=True):
            dec_layer.crossattention = enc_layer.crossattention
            dec_layer.intermediate = enc_layer.intermediate
            dec_layer.output = enc_layer.output
        decoder.cls.predictions.decoder.weight = encoder.embeddings.word_embeddings.weight
        self.decoder = decoder  # the captioner's own vision model is dropped: BLIP has one ViT
        self.log_logit_scale = nn.Parameter(torch.tensor(1 / 0.07).log())

    def forward(self, batch: Batch, generator: torch.Generator) -> torch.Tensor:
        r = self.retrieval
        ids, mask = batch.input_ids, batch.attention_mask
        image = r.vision_model(pixel_values=batch.pixels).last_hidden_state
        text = r.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        image_feat = F.normalize(r.vision_proj(image[:, 0]), dim=-1)
        text_feat = F.normalize(r.text_proj(text[:, 0]), dim=-1)
        logits = self.log_logit_scale.exp() * image_feat @ text_feat.t()
        labels = torch.arange(len(ids))
        itc = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
        with torch.no_grad():
            sim = image_feat @ text_feat.t()
        image_index, text_index, itm_labels = build_itm_pairs(*sample_hard_negatives(sim, sim.t(), batch.image_ids, generator))
        fused = r.text_encoder(input_ids=ids[text_index], attention_mask=mask[text_index], encoder_hidden_states=image[image_index]).last_hidden_state
        itm = F.cross_entropy(r.itm_head(fused[:, 0]), itm_labels)
        lm = self.decoder(input_ids=ids, attention_mask=mask, encoder_hidden_states=image, labels=ids.masked_fill(mask == 0, -100)).loss
        return itc + itm + lm


def peer_git(cfg: ModelConfig) -> nn.Module:
    from transformers import GitConfig, GitForCausalLM

    fusion = cfg.fusion
    vision = dict(_vision_dims(cfg), hidden_act="gelu")
    config = GitConfig(
        vision_config=vision, vocab_size=VOCAB, hidden_size=cfg.text_encoder.width, num_hidden_layers=fusion.depth,
        num_attention_heads=fusion.num_heads, intermediate_size=int(cfg.text_encoder.width * fusion.mlp_ratio),
        max_position_embeddings=cfg.text_encoder.max_length, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        tie_word_embeddings=True,
    )
    return GitForCausalLM(config)


def build_steps(model: str, size: str, dtype: str, which: tuple[str, ...] = ("vlp", "transformers"), vlp_fused: bool = False) -> tuple[dict[str, Callable[[], None]], dict[str, int], Batch]:
    cfg = vlp_config(model, size)
    batch = random_batch(BATCH[size], cfg.text_encoder.max_length, VOCAB, cfg.image_encoder.image_size)
    steps, counts = {}, {}
    if "vlp" in which:
        torch.manual_seed(0)
        ours = build_model(cfg)
        task = PretrainTask(ours, OBJECTIVES[model])
        optimizer = adamw(parameter_groups(ours, 0.05, ours.no_weight_decay()), fused=vlp_fused)
        steps["vlp"] = zero_grad_step(task, optimizer, lambda: task(batch).loss, dtype)
        counts["vlp"] = parameter_count(ours)
    if "transformers" in which:
        torch.manual_seed(0)
        if model == "blip":
            peer: nn.Module = PeerBLIP(cfg)
            generator = torch.Generator().manual_seed(0)  # vlp's task seeds by (seed, step); same draws here
            loss_fn = lambda: peer(batch, generator)  # noqa: E731
        else:
            peer = peer_git(cfg)
            labels = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)
            loss_fn = lambda: peer(input_ids=batch.input_ids, attention_mask=batch.attention_mask, pixel_values=batch.pixels, labels=labels).loss  # noqa: E731
        optimizer = adamw(parameter_groups(peer, 0.05))
        steps["transformers"] = zero_grad_step(peer, optimizer, loss_fn, dtype)
        counts["transformers"] = parameter_count(peer)
    return steps, counts, batch


def lm_head_rows(model: str, size: str) -> tuple[float, int]:
    """(vlp, transformers) rows the LM head projects per sample of the benchmark batch: vlp only the
    positions with a next-token target (`lm_targets`), the peer every text position and, for GIT,
    the image tokens too."""
    cfg = vlp_config(model, size)
    length = cfg.text_encoder.max_length
    batch = random_batch(BATCH[size], length, VOCAB, cfg.image_encoder.image_size)
    ours = lm_targets(batch.input_ids, batch.attention_mask)[1].numel() / len(batch)
    image_tokens = (cfg.image_encoder.image_size // cfg.image_encoder.patch_size) ** 2 + 1
    return ours, length + image_tokens if model == "git" else length


def timing_worker(args: argparse.Namespace) -> dict:
    steps, counts, batch = build_steps(args.model, args.size, args.dtype, vlp_fused=args.vlp_fused_adamw)
    measured = interleaved(steps, warmup=args.warmup, repeats=args.repeats, dtype=args.dtype)
    return {"counts": counts, "batch": len(batch), "measured": {name: vars(m) for name, m in measured.items()}}


def memory_worker(args: argparse.Namespace) -> dict:
    steps, _, _ = build_steps(args.model, args.size, args.dtype, which=(args.impl,), vlp_fused=args.vlp_fused_adamw)
    return rss_after(steps[args.impl])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="blip,git")
    parser.add_argument("--model", help=argparse.SUPPRESS)
    add_arguments(parser, warmup=2, repeats=8)
    args = parse_or_work(parser, timing_worker, memory_worker)
    if args is None:
        return

    machine, peak = banner(args, "transformers")
    print("fusion train step (fwd + bwd + AdamW): blip = ITC + ITM + LM, git = LM; median of interleaved steps")
    print(f"{'model':<6}{'size':<6}{'dtype':<6}{PAIR_HEADER}{'LM rows':>11}  load")
    for model in args.models.split(","):
        for size in args.sizes.split(","):
            for dtype in args.dtypes.split(","):
                if dtype == "bf16" and "bf16_gflops" not in peak:
                    print(f"{model:<6}{size:<6}{dtype:<6}  skipped: this CPU has no native bf16 (AVX512-BF16/AMX)")
                    continue
                load = load_average()
                result, memory = compare_in_subprocesses(__file__, ("vlp", "transformers"), ["--model", model, *worker_args(args, size, dtype)])
                cells, records = pair_cells(result, memory, ("vlp", "transformers"))
                rows = lm_head_rows(model, size)
                print(f"{model:<6}{size:<6}{dtype:<6}{cells}{rows[0]:>6.1f}/{rows[1]:<4}  {load}", flush=True)
                common = {"benchmark": f"train_step_{model}", "size": size, "dtype": dtype, "threads": args.threads, "load": load, "machine": machine}
                append_jsonl(args.json, [{**common, **r} for r in records])
    print(PAIR_LEGEND)
    print("LM rows = positions per sample the LM head projects, vlp/peer (vlp: those with a target; GIT's peer: image tokens too)")

if __name__ == "__main__":
    main()
