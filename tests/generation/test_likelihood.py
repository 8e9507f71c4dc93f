"""Scoring given continuations: K candidates per image in one cached pass, against a naive loop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vlp.generation import sequence_log_likelihood

ATOL = 1e-5


def _candidates(lm) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.tensor([[[5, 6, lm.EOS], [7, lm.EOS, 0], [8, 0, 0]], [[9, lm.EOS, 0], [5, 5, 5], [6, 0, 0]]])
    mask = torch.tensor([[[1, 1, 1], [1, 1, 0], [1, 0, 0]], [[1, 1, 0], [1, 1, 1], [1, 0, 0]]])
    return ids, mask


def _naive(model, inputs, prompt: list[list[int]], ids, mask) -> torch.Tensor:
    """One full forward per (image, candidate): sum log p of the candidate's real tokens."""
    out = torch.zeros(ids.shape[:2])
    with torch.no_grad():
        image = model.image_for_fusion(inputs)
        for b in range(ids.shape[0]):
            for k in range(ids.shape[1]):
                cand = ids[b, k][mask[b, k].bool()].tolist()
                seq = torch.tensor([prompt[b] + cand])
                logp = F.log_softmax(model.lm_logits(model.decode(image.select(torch.tensor([b])), seq, torch.ones_like(seq))), -1)
                start = len(prompt[b]) - 1
                out[b, k] = sum(float(logp[0, start + j, t]) for j, t in enumerate(cand))
    return out


@pytest.mark.parametrize("use_cache", [True, False])
def test_matches_one_forward_per_candidate(case, lm, use_cache) -> None:
    model, inputs = lm.model(case), lm.images(case, 2)
    ids, mask = _candidates(lm)
    prompts = torch.tensor([[lm.BOS, 11, 12], [lm.BOS, 0, 0]])
    with torch.no_grad():
        got = sequence_log_likelihood(model, inputs, ids, mask, prompts, (prompts != 0).long(), use_cache=use_cache)
    expected = _naive(model, inputs, [[lm.BOS, 11, 12], [lm.BOS]], ids, mask)
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


def test_shared_answer_list_and_single_token_candidates(lm) -> None:
    model, inputs = lm.model("git"), lm.images("git", 3)
    answers = torch.tensor([[5], [6], [lm.EOS]])
    with torch.no_grad():
        shared = sequence_log_likelihood(model, inputs, answers, bos_token_id=lm.BOS)
        per_image = sequence_log_likelihood(model, inputs, answers[None].expand(3, -1, -1), bos_token_id=lm.BOS)
        first = F.log_softmax(model.lm_logits(model.decode(model.image_for_fusion(inputs), torch.full((3, 1), lm.BOS), torch.ones(3, 1, dtype=torch.long))), -1)
    torch.testing.assert_close(shared, per_image)
    torch.testing.assert_close(shared, first[:, 0, answers[:, 0]], atol=ATOL, rtol=0)


def test_gradients_reach_the_decoder(lm) -> None:
    """SCST differentiates the log-likelihood of sampled captions."""
    model = lm.model("blip")
    ids, mask = _candidates(lm)
    ll = sequence_log_likelihood(model, lm.images("blip", 2), ids, mask, bos_token_id=lm.BOS)
    ll.sum().backward()
    grads = [p.grad for p in model.fusion.parameters() if p.grad is not None]
    assert grads and any(bool(g.abs().sum() > 0) for g in grads)
    model.zero_grad(set_to_none=True)


def test_rejects_bad_candidates(lm) -> None:
    model, inputs = lm.model("git"), lm.images("git", 2)
    with pytest.raises(ValueError, match="candidate_ids"):
        sequence_log_likelihood(model, inputs, torch.zeros(3, 2, 2, dtype=torch.long), bos_token_id=lm.BOS)
    with pytest.raises(ValueError, match="bos_token_id"):
        sequence_log_likelihood(model, inputs, torch.zeros(2, 2, dtype=torch.long))


def test_precomputed_image_features_give_the_same_scores(lm) -> None:
    model, inputs = lm.model("coca"), lm.images("coca", 2)
    ids, mask = _candidates(lm)
    with torch.no_grad():
        direct = sequence_log_likelihood(model, inputs, ids, mask, bos_token_id=lm.BOS)
        reused = sequence_log_likelihood(model, None, ids, mask, bos_token_id=lm.BOS, image_features=model.image_for_fusion(inputs))
    torch.testing.assert_close(direct, reused)
    with pytest.raises(ValueError, match="image_features"):
        sequence_log_likelihood(model, None, ids, mask, bos_token_id=lm.BOS)
