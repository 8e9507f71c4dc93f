"""Greedy, beam search and sampling: against each other, against exhaustive search, and their
stopping rules (EOS, min length, repeated n-grams), for every LM-capable model."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
import torch.nn.functional as F

from vlp.generation import GenerationConfig, generate, sequence_log_likelihood
from vlp.generation.processors import banned_ngram_tokens, filter_for_sampling

ATOL = 1e-5


def _cfg(lm, **kw) -> GenerationConfig:
    return GenerationConfig(bos_token_id=lm.BOS, eos_token_id=lm.EOS, pad_token_id=lm.PAD, **kw)


def _real(sequences: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
    return [row[: int(n)] for row, n in zip(sequences.tolist(), lengths)]


def _eos_biased(lm, case: str, bias: float):
    model = copy.deepcopy(lm.model(case))
    with torch.no_grad():
        model.lm_head.bias[lm.EOS] += bias
    return model


def test_one_beam_equals_greedy(case, lm) -> None:
    model, inputs = _eos_biased(lm, case, 2.0), lm.images(case, 4)
    for alpha in (0.0, 1.0):
        greedy = generate(model, inputs, _cfg(lm, max_new_tokens=8, length_penalty=alpha))
        beam = generate(model, inputs, _cfg(lm, max_new_tokens=8, strategy="beam", num_beams=1, length_penalty=alpha))
        assert _real(beam.sequences, beam.lengths) == _real(greedy.sequences, greedy.lengths)
        assert torch.equal(beam.lengths, greedy.lengths)
        torch.testing.assert_close(beam.scores, greedy.scores, atol=ATOL, rtol=0)


def test_beam_search_scores_at_least_greedy(case, lm) -> None:
    model, inputs = lm.model(case), lm.images(case, 6, seed=3)
    greedy = generate(model, inputs, _cfg(lm, max_new_tokens=6))
    beam = generate(model, inputs, _cfg(lm, max_new_tokens=6, strategy="beam", num_beams=4))
    assert bool((beam.scores >= greedy.scores - ATOL).all())
    # The returned score is the model's log-probability of the returned tokens.
    recomputed = _likelihood(model, inputs, beam, lm)
    torch.testing.assert_close(beam.scores, recomputed, atol=ATOL, rtol=0)


def test_beam_search_finds_better_sequences_than_greedy(lm) -> None:
    """A case where it matters: some rows of this GIT model have a better sequence than greedy's."""
    model, inputs = lm.model("git"), lm.images("git", 6, seed=3)
    greedy = generate(model, inputs, _cfg(lm, max_new_tokens=6))
    beam = generate(model, inputs, _cfg(lm, max_new_tokens=6, strategy="beam", num_beams=4))
    assert bool((beam.scores > greedy.scores + 1e-3).any())


def _likelihood(model, inputs, out, lm) -> torch.Tensor:
    """Sum log-prob of each generated row, by full recomputation."""
    mask = (torch.arange(out.sequences.shape[1])[None] < out.lengths[:, None]).long()
    ll = sequence_log_likelihood(model, inputs, out.sequences[:, None], mask[:, None], bos_token_id=lm.BOS, use_cache=False)
    return ll[:, 0]


def _exhaustive_best(model, inputs, lm, vocab: int, max_len: int) -> tuple[list[list[int]], list[float]]:
    """Every sequence of <= max_len tokens (EOS only last), scored by one full recomputation each."""
    words = [t for t in range(vocab) if t != lm.EOS]
    seqs = [list(p) + [lm.EOS] for n in range(max_len) for p in itertools.product(words, repeat=n)]
    seqs += [list(p) for p in itertools.product(words, repeat=max_len)]
    ids = torch.full((len(seqs), max_len + 1), lm.PAD)
    mask = torch.zeros_like(ids)
    for row, seq in enumerate(seqs):
        ids[row, : len(seq) + 1] = torch.tensor([lm.BOS] + seq)
        mask[row, : len(seq) + 1] = 1
    best_seqs, best_scores = [], []
    with torch.no_grad():
        image = model.image_for_fusion(inputs)
        for b in range(image.tokens.shape[0]):
            one = image.select(torch.full((len(seqs),), b))
            logp = F.log_softmax(model.lm_logits(model.decode(one, ids, mask)), -1)[:, :-1]
            token_scores = logp.gather(2, ids[:, 1:, None]).squeeze(2) * mask[:, 1:]
            scores = token_scores.sum(1)
            best = int(scores.argmax())
            best_seqs.append(seqs[best])
            best_scores.append(float(scores[best]))
    return best_seqs, best_scores


def test_beam_search_equals_exhaustive_search(case, lm) -> None:
    """With enough beams never to prune a prefix (K = V^(T-1)), beam search is exact."""
    vocab, max_len = 5, 3
    model, inputs = lm.model(case, vocab=vocab), lm.images(case, 2, seed=1)
    best_seqs, best_scores = _exhaustive_best(model, inputs, lm, vocab, max_len)
    out = generate(model, inputs, _cfg(lm, max_new_tokens=max_len, strategy="beam", num_beams=vocab ** (max_len - 1)))
    assert _real(out.sequences, out.lengths) == best_seqs
    torch.testing.assert_close(out.scores, torch.tensor(best_scores), atol=ATOL, rtol=0)


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_sequences_stop_at_eos_and_are_padded(case, lm, strategy) -> None:
    model, inputs = _eos_biased(lm, case, 2.5), lm.images(case, 6, seed=2)
    out = generate(model, inputs, _cfg(lm, max_new_tokens=8, strategy=strategy, num_beams=3 if strategy == "beam" else 1))
    stopped = 0
    for row, length in zip(out.sequences.tolist(), out.lengths.tolist()):
        if lm.EOS in row:
            first = row.index(lm.EOS)
            assert length == first + 1 and all(t == lm.PAD for t in row[first + 1 :])
            stopped += length < 8
        else:
            assert length == 8 == len(row)
    assert stopped > 0
    torch.testing.assert_close(out.scores, _likelihood(model, inputs, out, lm), atol=ATOL, rtol=0)
    torch.testing.assert_close(out.normalized_scores, out.scores)  # length_penalty 0


@pytest.mark.parametrize("strategy", ["greedy", "beam", "sample"])
def test_min_new_tokens_masks_eos(lm, strategy) -> None:
    model, inputs = _eos_biased(lm, "git", 50.0), lm.images("git", 3)
    beams = 2 if strategy == "beam" else 1
    eager = generate(model, inputs, _cfg(lm, max_new_tokens=6, strategy=strategy, num_beams=beams, seed=0))
    assert eager.lengths.tolist() == [1, 1, 1]
    out = generate(model, inputs, _cfg(lm, max_new_tokens=6, min_new_tokens=3, strategy=strategy, num_beams=beams, seed=0))
    assert out.lengths.tolist() == [4, 4, 4]
    assert out.sequences[:, 3].tolist() == [lm.EOS] * 3 and lm.EOS not in out.sequences[:, :3].tolist()[0]


def _ngrams(tokens: list[int], n: int) -> list[tuple[int, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_no_repeat_ngram(case, lm, strategy) -> None:
    model, inputs = lm.model(case), lm.images(case, 3)
    beams = 3 if strategy == "beam" else 1
    for n in (1, 2):
        out = generate(model, inputs, _cfg(lm, max_new_tokens=10, strategy=strategy, num_beams=beams, no_repeat_ngram_size=n))
        for row in _real(out.sequences, out.lengths):
            grams = _ngrams(row, n)
            assert len(grams) == len(set(grams)), row


def test_random_models_repeat_without_the_ban(lm) -> None:
    """The n-gram test above is not vacuous: unconstrained decoding repeats bigrams here."""
    out = generate(lm.model("blip"), lm.images("blip", 3), _cfg(lm, max_new_tokens=10))
    rows = _real(out.sequences, out.lengths)
    assert any(len(_ngrams(r, 2)) > len(set(_ngrams(r, 2))) for r in rows)


def test_banned_ngram_tokens() -> None:
    assert banned_ngram_tokens([5, 6, 7, 5], 2) == {6}
    assert banned_ngram_tokens([5, 6, 5, 7, 5], 2) == {6, 7}
    assert banned_ngram_tokens([5, 6, 7, 5, 6], 3) == {7}
    assert banned_ngram_tokens([5, 6], 1) == {5, 6}
    assert banned_ngram_tokens([5], 3) == set()


def test_allowed_token_ids_restrict_the_vocabulary(lm) -> None:
    out = generate(lm.model("coca"), lm.images("coca", 3), _cfg(lm, max_new_tokens=5, allowed_token_ids=(7, 9)))
    assert set(out.sequences.flatten().tolist()) <= {7, 9, lm.EOS, lm.PAD}


def test_sampling_is_reproducible_and_top_k_one_is_greedy(case, lm) -> None:
    model, inputs = lm.model(case), lm.images(case, 4)
    a = generate(model, inputs, _cfg(lm, max_new_tokens=8, strategy="sample", temperature=2.0, seed=7))
    b = generate(model, inputs, _cfg(lm, max_new_tokens=8, strategy="sample", temperature=2.0, seed=7))
    c = generate(model, inputs, _cfg(lm, max_new_tokens=8, strategy="sample", temperature=2.0, seed=8))
    assert torch.equal(a.sequences, b.sequences) and not torch.equal(a.sequences, c.sequences)
    torch.testing.assert_close(a.scores, _likelihood(model, inputs, a, lm), atol=ATOL, rtol=0)
    gen = torch.Generator().manual_seed(7)
    d = generate(model, inputs, _cfg(lm, max_new_tokens=8, strategy="sample", temperature=2.0, seed=99), generator=gen)
    assert torch.equal(a.sequences, d.sequences)  # an explicit generator wins over the seed
    greedy = generate(model, inputs, _cfg(lm, max_new_tokens=8))
    for kw in ({"top_k": 1}, {"top_p": 1e-6}):
        sampled = generate(model, inputs, _cfg(lm, max_new_tokens=8, strategy="sample", seed=3, **kw))
        assert torch.equal(sampled.sequences, greedy.sequences)
        torch.testing.assert_close(sampled.scores, greedy.scores, atol=ATOL, rtol=0)


def test_sampling_filters() -> None:
    logp = torch.tensor([[0.5, 0.25, 0.125, 0.125]]).log()
    cfg = GenerationConfig(strategy="sample", top_p=0.75)
    assert torch.isfinite(filter_for_sampling(logp, cfg)).tolist() == [[True, True, False, False]]
    cfg = GenerationConfig(strategy="sample", top_p=0.8)
    assert torch.isfinite(filter_for_sampling(logp, cfg)).tolist() == [[True, True, True, False]]
    cfg = GenerationConfig(strategy="sample", top_k=2, temperature=0.5)
    filtered = filter_for_sampling(logp, cfg)
    assert torch.isfinite(filtered).tolist() == [[True, True, False, False]]
    torch.testing.assert_close(filtered[0, :2], logp[0, :2] / 0.5)


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_batched_equals_one_by_one(case, lm, strategy) -> None:
    model, inputs = lm.model(case), lm.images(case, 3, seed=4)
    prompts = torch.tensor([[lm.BOS, 5, 6], [lm.BOS, 0, 0], [lm.BOS, 9, 0]])
    mask = (prompts != 0).long()
    cfg = _cfg(lm, max_new_tokens=6, strategy=strategy, num_beams=3 if strategy == "beam" else 1, length_penalty=0.6)
    batched = generate(model, inputs, cfg, prompts, mask)
    for row in range(3):
        length = int(mask[row].sum())
        single = generate(model, lm.select_images(inputs, [row]), cfg, prompts[row : row + 1, :length])
        assert _real(single.sequences, single.lengths) == _real(batched.sequences[row : row + 1], batched.lengths[row : row + 1])
        torch.testing.assert_close(single.scores, batched.scores[row : row + 1], atol=ATOL, rtol=0)
        torch.testing.assert_close(single.normalized_scores, batched.normalized_scores[row : row + 1], atol=ATOL, rtol=0)


def test_config_rejects_bad_settings() -> None:
    for kw, match in (
        ({"strategy": "nucleus"}, "unknown strategy"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"min_new_tokens": 30}, "min_new_tokens"),
        ({"num_beams": 3}, "strategy='beam'"),
        ({"top_p": 0.0}, "top_p"),
        ({"temperature": 0.0}, "temperature"),
        ({"allowed_token_ids": ()}, "allowed_token_ids"),
    ):
        with pytest.raises(ValueError, match=match):
            GenerationConfig(**kw)


def test_generate_rejects_bad_prompts(lm) -> None:
    model, inputs = lm.model("git"), lm.images("git", 2)
    with pytest.raises(ValueError, match="right-padded"):
        generate(model, inputs, _cfg(lm), torch.tensor([[1, 0, 5], [1, 5, 5]]), torch.tensor([[1, 0, 1], [1, 1, 1]]))
    with pytest.raises(ValueError, match="2 images"):
        generate(model, inputs, _cfg(lm), torch.tensor([[1]]))
