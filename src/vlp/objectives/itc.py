"""Image-text contrastive loss (ITC): the symmetric InfoNCE of CLIP / ALIGN.

    l_i = -log softmax_j(I_i . T_j / tau)[i] - log softmax_j(I_j . T_i / tau)[i]

A plain module over pure functions with no parameters: the temperature lives in the model and is
passed in. Several captions of one image may share a batch; with `image_ids` given, each row's target
is spread uniformly over every column showing the same image, so a caption is never pushed away
from its own image (ALBEF's retrieval fine-tuning does the same).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def itc_targets(image_ids: torch.Tensor | None, batch_size: int, device: torch.device) -> torch.Tensor:
    """[B, B] row-stochastic targets: identity, or uniform over same-image columns when ids are given."""
    if image_ids is None:
        return torch.eye(batch_size, device=device)
    same = (image_ids[:, None] == image_ids[None, :]).float()
    return same / same.sum(dim=1, keepdim=True)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over rows of -sum_j targets_ij log softmax(logits)_ij."""
    return -(targets * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean()


def itc_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: torch.Tensor | float,
    image_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric in-batch ITC over l2-normalised embeddings [B, E]; mean of both directions.

    With distinct images (or no ids) this equals open_clip's `ClipLoss` (hard targets, mean of the
    image->text and text->image cross-entropies).
    """
    logits_per_image = logit_scale * image_embeds @ text_embeds.t()
    if image_ids is None:
        labels = torch.arange(image_embeds.shape[0], device=image_embeds.device)
        return 0.5 * (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_image.t(), labels))
    targets = itc_targets(image_ids, image_embeds.shape[0], image_embeds.device)
    return 0.5 * (soft_cross_entropy(logits_per_image, targets) + soft_cross_entropy(logits_per_image.t(), targets))


class ITCLoss(nn.Module):
    """Module wrapper so tasks can hold objectives like layers; no trainable state."""

    def forward(
        self,
        image_embeds: torch.Tensor,
        text_embeds: torch.Tensor,
        logit_scale: torch.Tensor | float,
        image_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return itc_loss(image_embeds, text_embeds, logit_scale, image_ids)
