"""CNN grid features as image tokens (Pixel-BERT, SimVLM): a ResNet trunk whose feature map is flattened.

Pixel-BERT (Huang et al. 2020) feeds every cell of a ResNet-50/152 feature map to the fusion
transformer; SimVLM (Wang et al. 2022) uses the first three ResNet stages as its patch embedding.
`stages` chooses how deep the trunk goes and so the output stride (2 ** (stages + 1): 4, 8, 16,
32) and the number of tokens ((image_size / stride) ** 2). The trunk is torchvision's ResNet with
its module names kept (`conv1`, `bn1`, `layer1`, ...), so torchvision checkpoints load directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from vlp.encoders.base import Encoder, EncoderOutput
from vlp.encoders.image.common import check_patch_dropout, drop_patches

__all__ = ["CNNGridConfig", "CNNGridEncoder", "ResNetTrunk", "build_cnn_grid_encoder"]

ResNetName = Literal["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]


class ResNetTrunk(nn.Module):
    """Stem + the first `stages` residual stages of a torchvision ResNet: [B, 3, H, W] -> [B, C, H/s, W/s].

    Built with `weights=None` (no download); `load_torchvision_weights` takes a local state dict.
    BatchNorm double-counts running statistics under gradient checkpointing (the recomputation
    runs in training mode), as in every checkpointed CNN; lock the trunk to freeze the statistics.
    """

    def __init__(self, depth_name: ResNetName = "resnet50", stages: int = 4) -> None:
        super().__init__()
        import torchvision

        if not 1 <= stages <= 4:
            raise ValueError(f"stages must be in 1..4, got {stages}")
        net = getattr(torchvision.models, depth_name)(weights=None)
        self.stages = stages
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        for index in range(1, stages + 1):
            setattr(self, f"layer{index}", getattr(net, f"layer{index}"))
        last = getattr(net, f"layer{stages}")[-1]
        self.out_channels = int((last.bn3 if hasattr(last, "bn3") else last.bn2).num_features)
        self.stride = 2 ** (stages + 1)
        self.grad_checkpointing = False

    def layers(self) -> list[nn.Module]:
        return [getattr(self, f"layer{i}") for i in range(1, self.stages + 1)]

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(pixels))))
        for layer in self.layers():
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(layer, x, use_reentrant=False)
            else:
                x = layer(x)
        return x

    def load_torchvision_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load a torchvision ResNet state dict; the classifier and unused deeper stages are skipped."""
        own = self.state_dict()
        missing = sorted(set(own) - set(state_dict))
        if missing:
            raise ValueError(f"ResNet weights lack {len(missing)} keys of the trunk, e.g. {missing[:5]}")
        self.load_state_dict({k: v for k, v in state_dict.items() if k in own}, strict=True)


@dataclass
class CNNGridConfig:
    kind: str = "cnn_grid"
    depth_name: ResNetName = "resnet50"
    stages: int = 4  # residual stages used; output stride 2 ** (stages + 1)
    image_size: int = 224
    width: int | None = None  # None: the trunk's channels (2048 for ResNet-50 at 4 stages); else a Linear to it
    position_embedding: bool = False  # learned positions over the grid (the fusion may add its own)
    # Pixel-BERT's random pixel sampling: share of grid tokens dropped in training. The pooled
    # vector is the mean over all cells, taken before the drop.
    patch_dropout: float = 0.0
    weights_path: str | None = None  # local torchvision ResNet state dict, loaded by the builder

    def __post_init__(self) -> None:
        if not 1 <= self.stages <= 4:
            raise ValueError(f"stages must be in 1..4, got {self.stages}")
        stride = 2 ** (self.stages + 1)
        if self.image_size % stride != 0:
            raise ValueError(f"image_size {self.image_size} is not a multiple of the output stride {stride}")
        check_patch_dropout(self.patch_dropout)


class CNNGridEncoder(Encoder):
    """ResNet feature map -> [B, (S/stride)^2, width] tokens, pooled = their mean."""

    def __init__(self, cfg: CNNGridConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.trunk = ResNetTrunk(cfg.depth_name, cfg.stages)
        channels = self.trunk.out_channels
        self.width = cfg.width or channels
        self.proj: nn.Module = nn.Linear(channels, cfg.width) if cfg.width else nn.Identity()
        num_tokens = (cfg.image_size // self.trunk.stride) ** 2
        self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, self.width)) if cfg.position_embedding else None
        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed"} if self.pos_embed is not None else set()

    def lock_groups(self) -> list[list[nn.Module | nn.Parameter]]:
        """[stem], layer1, ..., layerK, [projection + positions]: `lock(1)` trains only the new head."""
        stem: list[nn.Module | nn.Parameter] = [self.trunk.conv1, self.trunk.bn1]
        head: list[nn.Module | nn.Parameter] = [self.proj] + ([self.pos_embed] if self.pos_embed is not None else [])
        return [stem, *[[layer] for layer in self.trunk.layers()], head]

    def forward(self, pixels: torch.Tensor) -> EncoderOutput:
        grid = self.trunk(pixels)  # [B, C, h, w]
        tokens = self.proj(grid.flatten(2).transpose(1, 2))  # [B, h*w, D]
        if self.pos_embed is not None:
            if tokens.shape[1] != self.pos_embed.shape[1]:
                raise ValueError(f"expected {self.cfg.image_size}px images, got {tuple(pixels.shape[-2:])}")
            tokens = tokens + self.pos_embed
        pooled = tokens.mean(dim=1)
        if self.training and self.cfg.patch_dropout > 0:
            tokens = drop_patches(tokens, self.cfg.patch_dropout, num_prefix_tokens=0)
        return EncoderOutput(tokens=tokens, pooled=pooled)


def build_cnn_grid_encoder(cfg: CNNGridConfig) -> CNNGridEncoder:
    """The registered builder: the encoder, with `weights_path` loaded into its trunk when set."""
    encoder = CNNGridEncoder(cfg)
    if cfg.weights_path:
        from vlp.encoders.convert import load_state_dict_file

        encoder.trunk.load_torchvision_weights(load_state_dict_file(cfg.weights_path))
    return encoder
