"""Image-text contrastive loss (ITC): the symmetric InfoNCE of CLIP / ALIGN, in-batch or with a queue.

    l_i = -log softmax_j(I_i . T_j / tau)[i] - log softmax_j(I_j . T_i / tau)[i]

Plain functions plus thin parameter-free modules: the temperature lives in the model and is passed
in as ``logit_scale = 1 / tau`` (a float, or the model's learnable tensor). Several captions of one
image may share a batch; with ``image_ids`` each row's target is spread uniformly over every column
showing the same image, so a caption is never pushed away from its own image.

Three ways to get negatives (lecture: "in-batch" vs "momentum queue"):

* ``itc_loss``: in-batch, one process.
* ``gathered_itc_loss``: in-batch over all ranks, the gather injected (``vlp.objectives.gather``).
* ``itc_loss_with_queue``: ALBEF/MoCo; the current batch's momentum features plus a queue of past
  ones, optionally with ALBEF's momentum-distillation soft targets (``itc_soft_targets``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vlp.objectives.gather import AllGatherFn, gather_features, gather_tensor
from vlp.objectives.queue import EMPTY_ID, FeatureQueue

__all__ = [
    "ITCLoss",
    "QueueITCLoss",
    "alpha_ramp",
    "gathered_itc_loss",
    "id_targets",
    "itc_loss",
    "itc_loss_with_queue",
    "itc_soft_targets",
    "itc_targets",
    "soft_cross_entropy",
]


def itc_targets(image_ids: torch.Tensor | None, batch_size: int, device: torch.device) -> torch.Tensor:
    """[B, B] row-stochastic targets: identity, or uniform over same-image columns when ids are given."""
    if image_ids is None:
        return torch.eye(batch_size, device=device)
    return id_targets(image_ids, image_ids)


def id_targets(row_ids: torch.Tensor, column_ids: torch.Tensor) -> torch.Tensor:
    """[R, C] float targets, uniform over the columns whose id equals the row's id.

    A row without any positive column gets an all-zero target (it then adds nothing to the loss)
    instead of the NaN a plain division would give.
    """
    same = (row_ids[:, None] == column_ids[None, :]).float()
    return same / same.sum(dim=1, keepdim=True).clamp_min(1.0)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over rows of -sum_j targets_ij log softmax(logits)_ij, computed in float32.

    Columns masked with ``-inf`` logits must have zero target; they are skipped (0 * -inf would be NaN),
    which is how empty queue slots drop out of ``itc_loss_with_queue``.
    """
    log_probs = F.log_softmax(logits.float(), dim=-1)
    log_probs = log_probs.masked_fill(targets == 0, 0.0)
    return -(targets * log_probs).sum(dim=-1).mean()


def _symmetric(
    logits_per_image: torch.Tensor,
    logits_per_text: torch.Tensor,
    labels: torch.Tensor | None,
    targets: torch.Tensor | None,
) -> torch.Tensor:
    if targets is None:
        assert labels is not None
        return 0.5 * (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels))
    return 0.5 * (soft_cross_entropy(logits_per_image, targets) + soft_cross_entropy(logits_per_text, targets))


def itc_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: torch.Tensor | float,
    image_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric in-batch ITC over l2-normalised embeddings [B, E]; mean of both directions.

    With distinct images (or no ids) this equals open_clip's ``ClipLoss`` (hard targets, mean of the
    image->text and text->image cross-entropies); tests/parity checks loss and gradients.
    """
    logits_per_image = logit_scale * image_embeds @ text_embeds.t()
    if image_ids is None:
        labels = torch.arange(image_embeds.shape[0], device=image_embeds.device)
        return _symmetric(logits_per_image, logits_per_image.t(), labels, None)
    targets = itc_targets(image_ids, image_embeds.shape[0], image_embeds.device)
    return _symmetric(logits_per_image, logits_per_image.t(), None, targets)


def gathered_itc_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: torch.Tensor | float,
    image_ids: torch.Tensor | None = None,
    *,
    rank: int,
    world_size: int,
    all_gather_fn: AllGatherFn,
    local_loss: bool = False,
    gather_with_grad: bool = False,
) -> torch.Tensor:
    """In-batch ITC whose negatives are the features of every rank (open_clip's two options).

    ``local_loss=False``: every rank builds the full [N, N] logits (N = W*B) and returns the global
    loss L. ``local_loss=True``: rank r only builds its B rows against all N columns (labels offset by
    r*B) and returns L_r; memory O(B*N) instead of O(N^2), and mean_r L_r = L.

    Gradients under DDP, which *averages* parameter gradients over the W ranks (x_r: rank r's features):

    * gather_with_grad=True: rank r's backward receives sum_s dL_s/dx_r through the gather
      (reduce-scatter SUM). Averaged by DDP this is exactly the single-process gradient of L for
      ``local_loss`` True (sum_s L_s / W = L) and False (each L_s = L, the W copies cancel the 1/W).
    * gather_with_grad=False, local_loss=False: rank r only sees dL/dx_r; after DDP's average the
      gradient is (1/W) * grad L, the full gradient scaled down by the world size (the known
      open_clip behaviour, issue #616; harmless with Adam, but the learning rate sees it with SGD).
    * gather_with_grad=False, local_loss=True: rank r only sees dL_r/dx_r; the gradient of x_r as a
      column in other ranks' rows is lost, so the result is an approximation, not a rescaling
      (open_clip issue #894: "local_loss must be with gather_with_grad").

    tests/objectives/test_itc_gather.py checks each case with a fake two-rank gather in one process.
    """
    if world_size == 1:
        return itc_loss(image_embeds, text_embeds, logit_scale, image_ids)
    all_image, all_text = gather_features(
        image_embeds, text_embeds, rank=rank, world_size=world_size,
        gather_with_grad=gather_with_grad, all_gather_fn=all_gather_fn,
    )
    all_ids = None
    if image_ids is not None:
        all_ids = gather_tensor(image_ids, rank=rank, world_size=world_size, gather_with_grad=False, all_gather_fn=all_gather_fn)
    if local_loss:
        logits_per_image = logit_scale * image_embeds @ all_text.t()
        logits_per_text = logit_scale * text_embeds @ all_image.t()
        batch = image_embeds.shape[0]
        if all_ids is None:
            labels = torch.arange(batch, device=image_embeds.device) + rank * batch
            return _symmetric(logits_per_image, logits_per_text, labels, None)
        assert image_ids is not None
        return _symmetric(logits_per_image, logits_per_text, None, id_targets(image_ids, all_ids))
    return itc_loss(all_image, all_text, logit_scale, all_ids)


def itc_soft_targets(
    momentum_logits: torch.Tensor,
    hard_targets: torch.Tensor,
    alpha: float,
    valid_columns: torch.Tensor | None = None,
) -> torch.Tensor:
    """ALBEF momentum distillation: ``alpha * softmax(momentum_logits) + (1 - alpha) * hard_targets``.

    The momentum model's similarities are pseudo-targets: a web caption that also fits another image
    in the batch is not punished as hard for matching it. ``valid_columns`` [C] masks empty queue
    slots so they get no target mass. Computed in float32 without gradient.
    """
    with torch.no_grad():
        logits = momentum_logits.detach().float()
        if valid_columns is not None:
            logits = logits.masked_fill(~valid_columns, float("-inf"))
        return alpha * logits.softmax(dim=-1) + (1.0 - alpha) * hard_targets.float()


def _queue_targets(
    image_ids: torch.Tensor | None, queue_ids: torch.Tensor | None, batch: int, queue_size: int, device: torch.device
) -> torch.Tensor:
    """[B, B+K] hard targets: same-image columns of the batch and of the queue (when ids are known)."""
    if image_ids is None:
        return torch.cat([torch.eye(batch, device=device), torch.zeros(batch, queue_size, device=device)], dim=1)
    if queue_ids is None:  # ids of queued features unknown: they are all negatives
        queue_ids = torch.full((queue_size,), EMPTY_ID, dtype=image_ids.dtype, device=device)
    return id_targets(image_ids, torch.cat([image_ids, queue_ids.to(image_ids)]))


def itc_loss_with_queue(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: torch.Tensor | float,
    queue_image: torch.Tensor,
    queue_text: torch.Tensor,
    image_ids: torch.Tensor | None = None,
    queue_ids: torch.Tensor | None = None,
    momentum_image: torch.Tensor | None = None,
    momentum_text: torch.Tensor | None = None,
    *,
    alpha: float = 0.0,
) -> torch.Tensor:
    """ALBEF-style ITC: each online feature [B, E] against [B + K] keys from the other modality.

    Keys are the current batch's momentum features (detached) followed by the queue [K, E]; without
    momentum features the online ones are used (with gradient), so an empty queue gives exactly
    ``itc_loss`` (value and gradient). ``queue_ids`` [K] (-1 = empty slot, masked out; see
    ``FeatureQueue``) also makes queued captions of a batch image positives, not negatives.
    ``alpha > 0`` mixes in the momentum model's soft targets (requires both momentum features);
    ramp it with ``alpha_ramp``.
    """
    batch, queue_size = image_embeds.shape[0], queue_image.shape[0]
    key_text = text_embeds if momentum_text is None else momentum_text.detach()
    key_image = image_embeds if momentum_image is None else momentum_image.detach()
    all_text = torch.cat([key_text, queue_text.detach().to(key_text.dtype)], dim=0)
    all_image = torch.cat([key_image, queue_image.detach().to(key_image.dtype)], dim=0)
    logits_per_image = logit_scale * image_embeds @ all_text.t()
    logits_per_text = logit_scale * text_embeds @ all_image.t()

    valid = None
    if queue_ids is not None:
        valid = torch.cat([torch.ones(batch, dtype=torch.bool, device=queue_ids.device), queue_ids != EMPTY_ID])
        valid = valid.to(logits_per_image.device)
        logits_per_image = logits_per_image.masked_fill(~valid, float("-inf"))
        logits_per_text = logits_per_text.masked_fill(~valid, float("-inf"))
    hard = _queue_targets(image_ids, queue_ids, batch, queue_size, image_embeds.device)
    if alpha == 0.0:
        targets_i2t = targets_t2i = hard
    else:
        if momentum_image is None or momentum_text is None:
            raise ValueError("alpha > 0 (momentum distillation) needs momentum_image and momentum_text")
        scale = logit_scale.detach() if isinstance(logit_scale, torch.Tensor) else logit_scale
        with torch.no_grad():
            targets_i2t = itc_soft_targets(scale * momentum_image @ all_text.t(), hard, alpha, valid)
            targets_t2i = itc_soft_targets(scale * momentum_text @ all_image.t(), hard, alpha, valid)
    return 0.5 * (soft_cross_entropy(logits_per_image, targets_i2t) + soft_cross_entropy(logits_per_text, targets_t2i))


def alpha_ramp(step: int, ramp_steps: int, alpha: float) -> float:
    """Distillation weight at ``step``: linear from 0 to ``alpha`` over ``ramp_steps``, then flat.

    ALBEF ramps alpha over the first epoch (``ramp_steps = steps_per_epoch``) because the momentum
    model starts as a copy of a random model, whose soft targets are noise.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if ramp_steps <= 0:
        return alpha
    return alpha * min(1.0, step / ramp_steps)


class ITCLoss(nn.Module):
    """Module wrapper so tasks can hold objectives like layers; no trainable state.

    For several ranks, pass ``rank``, ``world_size`` and an ``all_gather_fn`` (see ``gathered_itc_loss``);
    the attributes may also be set by the trainer after construction.
    """

    def __init__(
        self,
        *,
        rank: int = 0,
        world_size: int = 1,
        local_loss: bool = False,
        gather_with_grad: bool = False,
        all_gather_fn: AllGatherFn | None = None,
    ) -> None:
        super().__init__()
        self.rank, self.world_size = rank, world_size
        self.local_loss, self.gather_with_grad = local_loss, gather_with_grad
        self.all_gather_fn = all_gather_fn

    def forward(
        self,
        image_embeds: torch.Tensor,
        text_embeds: torch.Tensor,
        logit_scale: torch.Tensor | float,
        image_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.world_size == 1:
            return itc_loss(image_embeds, text_embeds, logit_scale, image_ids)
        if self.all_gather_fn is None:
            raise ValueError(f"world_size={self.world_size} needs an all_gather_fn")
        return gathered_itc_loss(
            image_embeds, text_embeds, logit_scale, image_ids, rank=self.rank, world_size=self.world_size,
            all_gather_fn=self.all_gather_fn, local_loss=self.local_loss, gather_with_grad=self.gather_with_grad,
        )


class QueueITCLoss(nn.Module):
    """Queue ITC holding its ``FeatureQueue`` (buffers only). Call ``enqueue`` from ``after_step``."""

    def __init__(self, queue_size: int, dim: int) -> None:
        super().__init__()
        self.queue = FeatureQueue(queue_size, dim)

    def forward(
        self,
        image_embeds: torch.Tensor,
        text_embeds: torch.Tensor,
        logit_scale: torch.Tensor | float,
        image_ids: torch.Tensor | None = None,
        momentum_image: torch.Tensor | None = None,
        momentum_text: torch.Tensor | None = None,
        alpha: float = 0.0,
    ) -> torch.Tensor:
        q = self.queue
        return itc_loss_with_queue(
            image_embeds, text_embeds, logit_scale, q.image_queue, q.text_queue, image_ids, q.id_queue,
            momentum_image, momentum_text, alpha=alpha,
        )

    @torch.no_grad()
    def enqueue(self, image_feats: torch.Tensor, text_feats: torch.Tensor, image_ids: torch.Tensor | None = None) -> None:
        self.queue.enqueue(image_feats, text_feats, image_ids)
