"""The training-step benchmarks still compare like with like (they import vlp internals that change).

Each check here guards a claim RESULTS.md makes: both CLIPs have the same parameters up to the
unit, pool the same text position, and compute the same loss from the same
weights; the BLIP peer really shares what BLIP shares; the harness's FLOP count and probe are sane.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

pytest.importorskip("open_clip")

import harness  # noqa: E402
from bench_train_step import CONTEXT, VOCAB, build_steps, check_counts, open_clip_model, vlp_config  # noqa: E402


def test_clip_parameter_counts_are_equal() -> None:
    cfg = vlp_config("tiny")
    from vlp.models import build_model

    counts = {"vlp": harness.parameter_count(build_model(cfg)), "open_clip": harness.parameter_count(open_clip_model(cfg))}
    assert counts["vlp"] == counts["open_clip"]
    check_counts(counts)
    with pytest.raises(AssertionError, match="differ"):
        check_counts({"vlp": 1, "open_clip": 2})


def test_random_batch_puts_eos_where_both_poolings_look() -> None:
    batch = harness.random_batch(16, CONTEXT, VOCAB, 32, seed=1)
    last_real = batch.attention_mask.sum(dim=1) - 1
    assert torch.equal(batch.input_ids.argmax(dim=1), last_real)  # open_clip's argmax pooling
    assert (batch.input_ids[batch.attention_mask == 0] == 0).all()


def test_clip_steps_train_and_count_flops() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a loaded CI box, 2 threads spend their time at OpenMP barriers
    try:
        _check_clip_steps()
    finally:
        torch.set_num_threads(threads)


def _check_clip_steps() -> None:
    torch.manual_seed(0)
    steps, _, _ = build_steps("tiny", "fp32", batch_size=8)
    flops = {name: harness.count_flops(step) for name, step in steps.items()}
    # Same architecture, attention counted on both sides (SDPA's math backend while counting).
    assert flops["vlp"] == pytest.approx(flops["open_clip"], rel=0.01)
    measured = harness.interleaved(steps, warmup=0, repeats=2, dtype="fp32")
    assert set(measured) == {"vlp", "open_clip", harness.PEAK}
    assert all(m.median_s > 0 for m in measured.values())
    assert measured[harness.PEAK].flops == 2 * 1024**3


def test_blip_peer_shares_everything_but_self_attention() -> None:
    pytest.importorskip("transformers")
    from bench_fusion_step import PeerBLIP, vlp_config as fusion_config

    peer = PeerBLIP(fusion_config("blip", "tiny"))
    encoder_layer = peer.retrieval.text_encoder.encoder.layer[0]
    decoder_layer = peer.decoder.bert.encoder.layer[0]
    assert decoder_layer.crossattention is encoder_layer.crossattention
    assert decoder_layer.intermediate is encoder_layer.intermediate
    assert decoder_layer.attention is not encoder_layer.attention
    assert peer.decoder.cls.predictions.decoder.weight is peer.retrieval.text_encoder.embeddings.word_embeddings.weight
    generator = torch.Generator().manual_seed(0)
    batch = harness.random_batch(4, 32, 30524, 32)
    loss = peer(batch, generator)
    loss.backward()
    assert torch.isfinite(loss)
