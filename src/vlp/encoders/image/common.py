"""Pieces shared by the pixel-based image encoders: patch embedding and patch dropout."""

from __future__ import annotations

import torch
from torch import nn


class PatchEmbed(nn.Module):
    """Non-overlapping patches by one convolution with kernel = stride (the ViLT image 'encoder').

    Checks the grid size so that a wrong input resolution fails here with the sizes in the message,
    not later as a broadcasting error against the position embeddings.
    """

    def __init__(
        self, patch_size: int, width: int, in_channels: int = 3, image_size: int | None = None, bias: bool = True
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.image_size = image_size
        self.proj = nn.Conv2d(in_channels, width, kernel_size=patch_size, stride=patch_size, bias=bias)

    @property
    def num_patches(self) -> int:
        if self.image_size is None:
            raise ValueError("PatchEmbed was built without image_size")
        return (self.image_size // self.patch_size) ** 2

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.image_size is not None and tuple(pixels.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(
                f"expected {self.image_size}x{self.image_size} images, got {tuple(pixels.shape[-2:])} "
                "(the position embeddings are learned for one resolution)"
            )
        return self.proj(pixels).flatten(2).transpose(1, 2)  # [B, D, h, w] -> [B, h*w, D]


def drop_patches(
    x: torch.Tensor, prob: float, num_prefix_tokens: int = 1, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Keep a random ``1 - prob`` share of the non-prefix tokens of each sample (FLIP, Li et al. 2023).

    [B, P + N, D] -> [B, P + K, D] with K = max(1, int(N * (1 - prob))). Prefix tokens ([CLS]) are
    always kept. Position embeddings must already be added, so the kept tokens still know where
    they came from; the kept tokens stay in their original order. ViLT's "patch sampling" and
    Pixel-BERT's random pixel sampling are the same operation on patch or CNN-grid tokens.
    """
    if prob <= 0.0:
        return x
    prefix, patches = x[:, :num_prefix_tokens], x[:, num_prefix_tokens:]
    batch, length, dim = patches.shape
    keep = max(1, int(length * (1.0 - prob)))
    scores = torch.rand(batch, length, device=x.device, generator=generator)
    index = scores.argsort(dim=1)[:, :keep].sort(dim=1).values
    patches = patches.gather(1, index[..., None].expand(-1, -1, dim))
    return torch.cat([prefix, patches], dim=1)


class PatchDropout(nn.Module):
    """`drop_patches` during training only (as open_clip's and timm's PatchDropout); identity in eval."""

    def __init__(self, prob: float, num_prefix_tokens: int = 1) -> None:
        super().__init__()
        check_patch_dropout(prob)
        self.prob = prob
        self.num_prefix_tokens = num_prefix_tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.prob == 0.0:
            return x
        return drop_patches(x, self.prob, self.num_prefix_tokens)

    def extra_repr(self) -> str:
        return f"prob={self.prob}, num_prefix_tokens={self.num_prefix_tokens}"


def check_patch_dropout(prob: float) -> None:
    if not 0.0 <= prob < 1.0:
        raise ValueError(f"patch_dropout must be in [0, 1), got {prob}")
