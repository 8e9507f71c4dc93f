"""Cross-entropy of a vocabulary projection without materialising the [n, V] logits.

    loss = mean_i [ logsumexp_v (h_i . w_v + b_v) - (h_i . w_{y_i} + b_{y_i}) ]   (+ label smoothing)

Why: at the small presets the LM head (30,524 words, width 128) and its softmax are about a third
of a BLIP training step, and most of that third is memory traffic, not FLOPs: torch's
``linear`` + ``cross_entropy`` writes the logits (plus a bias copy), writes and re-reads the
log-softmax, then in backward fills a zero gradient, scatters into it and runs the log-softmax
backward, each a pass over n x V floats (100 MB at n = 842). Here the rows are processed in chunks
small enough to stay in cache (``CHUNK_FLOATS`` logits at a time); each chunk's gradient
``softmax - onehot`` is formed in place right after its logsumexp and multiplied straight into
the gradients of the hidden states, the weight and the bias. The forward therefore does the
backward's matmuls (the same FLOPs as the unfused pair), stores only those three gradients, and
the backward scales them by the incoming gradient. Measured on the blip_small LM head (842 rows,
1 thread): see benchmarks/RESULTS.md.

The gradients are computed in forward only when autograd will want them (grad mode on and an
input requiring grad); otherwise only the loss is computed.
"""

from __future__ import annotations

from typing import Any

import torch

from vlp.objectives.mlm import IGNORE_INDEX

__all__ = ["CHUNK_FLOATS", "linear_cross_entropy"]

# Logits held at once: 2M floats (8 MB) = 68 rows of a BERT vocabulary, inside a CPU's L2+L3 share.
CHUNK_FLOATS = 1 << 21


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    labels: torch.Tensor,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Mean cross-entropy of ``hidden @ weight.T + bias`` ([n, D] x [V, D]) for ``labels`` [n].

    Equals ``token_prediction_loss(F.linear(hidden, weight, bias), labels, label_smoothing)``:
    rows labelled -100 are ignored, the mean is over the other rows, and no labelled row gives 0
    (attached to the graph). Softmax statistics in float32; under autocast the matmuls run in the
    autocast dtype, like ``F.linear`` would.
    """
    if hidden.dim() != 2 or labels.shape != hidden.shape[:1] or weight.dim() != 2 or weight.shape[1] != hidden.shape[1]:
        raise ValueError(
            f"expected hidden [n, D], weight [V, D], labels [n]; got {tuple(hidden.shape)}, {tuple(weight.shape)}, {tuple(labels.shape)}"
        )
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    keep = labels != IGNORE_INDEX
    if not bool(keep.all()):
        hidden, labels = hidden[keep], labels[keep]
    compute_dtype = torch.get_autocast_dtype(hidden.device.type) if torch.is_autocast_enabled(hidden.device.type) else hidden.dtype
    need_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (hidden, weight, bias))
    total = _LinearCrossEntropy.apply(hidden, weight, bias, labels, label_smoothing, compute_dtype, need_grad)
    return total / max(int(labels.numel()), 1)


class _LinearCrossEntropy(torch.autograd.Function):
    """Summed loss; gradients formed chunk by chunk in forward (see the module docstring)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        labels: torch.Tensor,
        label_smoothing: float,
        compute_dtype: torch.dtype,
        need_grad: bool,
    ) -> torch.Tensor:
        want = [t is not None and t.requires_grad for t in (hidden, weight, bias)]
        with torch.autocast(hidden.device.type, enabled=False):
            h, w = hidden.to(compute_dtype), weight.to(compute_dtype)
            b = None if bias is None else bias.to(compute_dtype)
            rows, vocab = h.shape[0], w.shape[0]
            chunk = max(1, CHUNK_FLOATS // max(vocab, 1))
            stats = torch.promote_types(compute_dtype, torch.float32)  # softmax statistics: float32 at least
            total = torch.zeros((), dtype=stats, device=h.device)
            grad_h = torch.empty_like(h) if need_grad and want[0] else None
            grad_w = torch.zeros(w.shape, dtype=stats, device=w.device) if need_grad and want[1] else None
            grad_b = torch.zeros(vocab, dtype=stats, device=w.device) if need_grad and want[2] else None
            for start in range(0, rows, chunk):
                h_c, y_c = h[start : start + chunk], labels[start : start + chunk]
                logits = (h_c @ w.t() if b is None else torch.addmm(b, h_c, w.t())).to(stats)  # [c, V]
                lse = logits.logsumexp(dim=-1)
                target = logits.gather(1, y_c[:, None]).squeeze(1)
                loss = lse - target
                if label_smoothing > 0:
                    loss = (1 - label_smoothing) * loss + label_smoothing * (lse - logits.mean(dim=-1))
                total += loss.sum()
                if not need_grad:
                    continue
                probs = logits.sub_(lse[:, None]).exp_()  # d loss / d logits, formed in place:
                probs[torch.arange(len(y_c), device=probs.device), y_c] -= 1 - label_smoothing
                if label_smoothing > 0:
                    probs.sub_(label_smoothing / vocab)
                g = probs.to(compute_dtype)
                if grad_h is not None:
                    grad_h[start : start + chunk] = g @ w
                if grad_w is not None:
                    if g.dtype == grad_w.dtype:
                        grad_w.addmm_(g.t(), h_c)
                    else:  # low-precision matmul, float32 accumulation over chunks
                        grad_w.add_((g.t() @ h_c).to(stats))
                if grad_b is not None:
                    grad_b += probs.sum(dim=0)
        ctx.save_for_backward(*(t if t is not None else torch.empty(0) for t in (grad_h, grad_w, grad_b)))
        ctx.present = (grad_h is not None, grad_w is not None, grad_b is not None)
        ctx.dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
        return total

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        grads = []
        for saved, present, dtype in zip(ctx.saved_tensors, ctx.present, ctx.dtypes, strict=True):
            grads.append((saved * grad_out).to(dtype) if present else None)
        return (*grads, None, None, None, None)
