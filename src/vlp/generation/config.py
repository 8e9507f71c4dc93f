"""What a decoding run may do: one dataclass, validated on construction.

Token ids are explicit fields (models know no tokenizer); `GenerationConfig.for_tokenizer` fills
them from our `TextTokenizer`, whose captions are ``[CLS] words [SEP]`` -- so a caption starts with
the [CLS] id and ends with the [SEP] id, which is what the LM objective trained on. A tokenizer that
came with imported weights may name another start token (`TextTokenizer.decoder_start_id`: BLIP's
captioner starts from [DEC], as Hugging Face's ``BlipForConditionalGeneration.generate`` does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Strategy = Literal["greedy", "beam", "sample"]
PromptMode = Literal["causal", "seq2seq"]
STRATEGIES: tuple[str, ...] = ("greedy", "beam", "sample")


@dataclass(frozen=True)
class GenerationConfig:
    """Decoding settings.

    ``length_penalty`` is GNMT/Hugging Face style: hypotheses are ranked by ``sum log p / len**alpha``
    (``len`` counts generated tokens including EOS); 0 ranks by the plain sum.
    ``prompt_mode``: how the prompt (BOS, or e.g. a VQA question) is attended -- "causal" as in LM
    training, or "seq2seq" (bidirectional prefix, SimVLM PrefixLM / GIT VQA). Generated tokens are
    always causal.
    ``allowed_token_ids``: restrict every generated token to this set (plus EOS), e.g. the words of
    a closed answer vocabulary.
    """

    max_new_tokens: int = 20
    min_new_tokens: int = 0
    strategy: Strategy = "greedy"
    num_beams: int = 1
    length_penalty: float = 0.0
    no_repeat_ngram_size: int = 0
    top_k: int = 0  # 0: no top-k filter
    top_p: float = 1.0  # 1.0: no nucleus filter
    temperature: float = 1.0
    bos_token_id: int = 1
    eos_token_id: int = 2
    pad_token_id: int = 0
    use_cache: bool = True
    seed: int | None = None  # sampling; a torch.Generator passed to `generate` takes precedence
    prompt_mode: PromptMode = "causal"
    allowed_token_ids: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; expected one of {STRATEGIES}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ValueError(f"min_new_tokens must be in [0, max_new_tokens={self.max_new_tokens}], got {self.min_new_tokens}")
        if self.num_beams < 1:
            raise ValueError(f"num_beams must be >= 1, got {self.num_beams}")
        if self.num_beams > 1 and self.strategy != "beam":
            raise ValueError(f"num_beams={self.num_beams} needs strategy='beam' (got {self.strategy!r})")
        if self.no_repeat_ngram_size < 0:
            raise ValueError("no_repeat_ngram_size must be >= 0")
        if self.top_k < 0:
            raise ValueError("top_k must be >= 0")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.temperature <= 0.0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if self.prompt_mode not in ("causal", "seq2seq"):
            raise ValueError(f"prompt_mode must be 'causal' or 'seq2seq', got {self.prompt_mode!r}")
        if min(self.bos_token_id, self.eos_token_id, self.pad_token_id) < 0:
            raise ValueError("token ids must be non-negative")
        if self.allowed_token_ids is not None:
            if not self.allowed_token_ids:
                raise ValueError("allowed_token_ids is empty")
            object.__setattr__(self, "allowed_token_ids", tuple(int(t) for t in self.allowed_token_ids))

    @classmethod
    def for_tokenizer(cls, tokenizer: Any, **overrides: Any) -> GenerationConfig:
        """Ids of a `TextTokenizer`-like object: BOS = its decoder start ([CLS] unless it says
        otherwise), EOS = [SEP], PAD (see the module doc)."""
        bos = getattr(tokenizer, "decoder_start_id", tokenizer.cls_id)
        ids = dict(bos_token_id=bos, eos_token_id=tokenizer.sep_id, pad_token_id=tokenizer.pad_id)
        return cls(**{**ids, **overrides})
