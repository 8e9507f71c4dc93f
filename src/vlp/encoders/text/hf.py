"""Hugging Face text models (BERT, RoBERTa, MiniLM, ...) as text encoders, loaded from a local directory.

METER (Dou et al. 2022) found the text encoder matters (RoBERTa over BERT); this adapter makes any
`transformers.AutoModel` checkpoint a text tower without forking its code. `transformers` is an
optional dependency, imported only when such an encoder is built. Weights come only from a local
directory in `save_pretrained` layout (config.json + model.safetensors): `local_files_only=True`,
nothing is downloaded. The tokenizer must be the model's own (its vocab.txt / tokenizer.json).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from vlp.encoders.base import Encoder, EncoderOutput, last_token, masked_mean

__all__ = ["HFTextConfig", "HFTextEncoder", "build_hf_text_encoder", "import_transformers"]


@dataclass
class HFTextConfig:
    kind: str = "hf"
    path: str = ""  # local directory written by `save_pretrained` (or a snapshot of a Hub repo)
    max_length: int = 64  # tokenizer truncation length; at most the model's max_position_embeddings
    # The tokenizer's vocabulary size, when the experiment sets it; it must fit the model's embedding.
    vocab_size: int | None = None
    # "cls": first token; "mean": mean of real tokens (sentence-transformers' MiniLM is trained for
    # it); "last": last real token (decoder models); "pooler": the model's pooler (BERT's NSP tanh).
    pool: Literal["cls", "mean", "last", "pooler"] = "cls"

    def __post_init__(self) -> None:
        if not self.path:
            raise ValueError("path is required: a local directory holding a Hugging Face model (config.json + weights)")


def import_transformers() -> Any:
    try:
        import transformers
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the 'hf' text encoder needs the optional dependency transformers: pip install transformers"
        ) from err
    return transformers


class HFTextEncoder(Encoder):
    """Wraps a loaded `transformers` model; tokens are its last hidden states, mask the attention mask."""

    def __init__(self, cfg: HFTextConfig, model: nn.Module) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = model
        config = model.config
        self.width = int(config.hidden_size)
        max_positions = getattr(config, "max_position_embeddings", None)
        if max_positions is not None and cfg.max_length > int(max_positions):
            raise ValueError(f"max_length {cfg.max_length} exceeds the model's max_position_embeddings {max_positions}")
        if cfg.vocab_size is not None and cfg.vocab_size > int(config.vocab_size):
            raise ValueError(
                f"vocab_size {cfg.vocab_size} (the tokenizer's) exceeds the model's {config.vocab_size}: "
                "use the model's own tokenizer"
            )
        has_pooler = isinstance(getattr(model, "pooler", None), nn.Module)
        if cfg.pool == "pooler" and not has_pooler:
            raise ValueError(f"{type(model).__name__} has no pooler: use pool='cls', 'mean' or 'last'")
        if cfg.pool != "pooler" and has_pooler:
            # An unused pooler gets no gradient, which DDP rejects; BERT-family forwards skip a None pooler.
            model.pooler = None

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        if not getattr(self.model, "supports_gradient_checkpointing", False):
            raise NotImplementedError(f"{type(self.model).__name__} does not support gradient checkpointing")
        # transformers 5 renamed gradient_checkpointing_* to activation_checkpointing_* (old names warn).
        kwargs = {"use_reentrant": False}
        if hasattr(self.model, "activation_checkpointing_enable"):
            if enabled:
                self.model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
            else:
                self.model.activation_checkpointing_disable()
        elif enabled:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        else:
            self.model.gradient_checkpointing_disable()

    def no_weight_decay(self) -> set[str]:
        return {n for n, _ in self.named_parameters() if "position_embeddings" in n or "token_type_embeddings" in n}

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> EncoderOutput:
        kwargs: dict[str, torch.Tensor] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        out = self.model(**kwargs)
        tokens = out.last_hidden_state
        if self.cfg.pool == "cls":
            pooled = tokens[:, 0]
        elif self.cfg.pool == "mean":
            pooled = masked_mean(tokens, attention_mask)
        elif self.cfg.pool == "last":
            pooled = last_token(tokens, attention_mask)
        else:
            pooled = out.pooler_output
        return EncoderOutput(tokens=tokens, pooled=pooled, mask=attention_mask)


def build_hf_text_encoder(cfg: HFTextConfig) -> HFTextEncoder:
    """The registered builder: `AutoModel.from_pretrained(cfg.path, local_files_only=True)` wrapped."""
    transformers = import_transformers()
    path = Path(cfg.path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not a Hugging Face model directory (no config.json); nothing is downloaded")
    model = transformers.AutoModel.from_pretrained(str(path), local_files_only=True)
    return HFTextEncoder(cfg, model)
