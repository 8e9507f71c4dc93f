"""WordPiece text tokenizer on Hugging Face ``tokenizers`` (Rust: batch-parallel encode).

Normalisation, pre-tokenisation, the ``[CLS] tokens [SEP]`` template, truncation (which keeps
``[SEP]``) and padding to the longest sequence all run inside the ``tokenizers`` pipeline, not in
Python loops. One configured copy of the pipeline is kept per ``max_length``, so the saved base
tokenizer never carries truncation or padding state.
"""

from __future__ import annotations

import string
from collections import Counter

import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

__all__ = ["SPECIAL_TOKENS", "TextTokenizer", "TOKENIZER_FILE", "META_FILE"]

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[BOS]", "[EOS]")
_ROLES = ("pad", "unk", "cls", "sep", "mask", "bos", "eos")
_REQUIRED = ("pad", "unk", "cls", "sep", "mask")
TOKENIZER_FILE = "tokenizer.json"
META_FILE = "vlp_tokenizer.json"
_META_VERSION = 1


_DECODER_STARTS = ("cls", "bos")


class TextTokenizer:
    """Text <-> token ids. Construct with ``train_wordpiece``, ``from_vocab_txt``, ``from_file``
    or ``load``; the constructor takes a ready ``tokenizers.Tokenizer`` and role -> token names.

    ``decoder_start``: the role whose token a caption decoder starts from (`decoder_start_id`, what
    `GenerationConfig.for_tokenizer` uses as BOS). vlp's own LM objective trains on ``[CLS] words
    [SEP]``, so "cls"; BLIP's captioner was trained from ``[DEC]`` (its bos token), so the hf-blip
    tokenizer says "bos" (`vlp.pretrained.tokenizers.blip_tokenizer`).
    """

    def __init__(self, tokenizer: Tokenizer, special_tokens: dict[str, str], decoder_start: str = "cls"):
        missing = [r for r in _ROLES if r not in special_tokens]
        if missing:
            raise ValueError(f"special_tokens lacks roles {missing}")
        if decoder_start not in _DECODER_STARTS:
            raise ValueError(f"decoder_start must be one of {_DECODER_STARTS}, got {decoder_start!r}")
        ids: dict[str, int] = {}
        for role in _ROLES:
            tid = tokenizer.token_to_id(special_tokens[role])
            if tid is None:
                raise ValueError(f"{role} token {special_tokens[role]!r} is not in the vocabulary")
            ids[role] = tid
        tokenizer.no_truncation()
        tokenizer.no_padding()
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{special_tokens['cls']} $A {special_tokens['sep']}",
            pair=f"{special_tokens['cls']} $A {special_tokens['sep']} $B:1 {special_tokens['sep']}:1",
            special_tokens=[
                (special_tokens["cls"], ids["cls"]),
                (special_tokens["sep"], ids["sep"]),
            ],
        )
        self._tok = tokenizer
        self.special_tokens = dict(special_tokens)
        self.pad_id, self.unk_id, self.cls_id = ids["pad"], ids["unk"], ids["cls"]
        self.sep_id, self.mask_id = ids["sep"], ids["mask"]
        self.bos_id, self.eos_id = ids["bos"], ids["eos"]
        self.decoder_start = decoder_start
        self.decoder_start_id: int = ids[decoder_start]
        self.vocab_size: int = tokenizer.get_vocab_size(with_added_tokens=True)
        self._configured: dict[int, Tokenizer] = {}

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def train_wordpiece(
        cls, texts: Iterable[str], vocab_size: int = 1000, min_frequency: int = 1
    ) -> TextTokenizer:
        """A BERT-style uncased WordPiece vocabulary from the captions; ``SPECIAL_TOKENS`` get ids 0..6.

        Why our own selection instead of ``tokenizers.trainers.WordPieceTrainer``: that trainer
        breaks frequency ties between merges in hash-map order, so the same captions give a
        different vocabulary on every call (4 of 4 calls differed on the scenes captions), and a
        seeded run would not be reproducible. Here the vocabulary is deterministic: the special
        tokens, every character seen (word-initial and ``##`` continuation forms, so any word can
        still be spelled), then whole words by descending frequency (ties alphabetical) until
        ``vocab_size``. Caption corpora have small vocabularies, so nearly every word becomes one
        token; rarer words fall back to WordPiece's greedy longest-match over the pieces. Text is
        normalised and split by the same Rust BERT normaliser/pre-tokenizer used at encode time.
        """
        pipeline = _bert_pipeline(models.WordPiece({t: i for i, t in enumerate(SPECIAL_TOKENS)}, unk_token="[UNK]"))
        normalizer, pre_tokenizer = pipeline.normalizer, pipeline.pre_tokenizer
        counts: Counter[str] = Counter()
        for text in texts:
            words = pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))
            counts.update(word for word, _ in words)
        # printable ASCII is always in, so punctuation or digits absent from training never become [UNK]
        ascii_chars = set(string.ascii_lowercase + string.digits + string.punctuation)
        chars = sorted({c for word in counts for c in word} | ascii_chars)
        pieces = chars + ["##" + c for c in chars]
        vocab_list = list(SPECIAL_TOKENS) + pieces
        taken = set(vocab_list)
        ranked = sorted((w for w, n in counts.items() if n >= min_frequency and w not in taken), key=lambda w: (-counts[w], w))
        vocab_list += ranked[: max(0, vocab_size - len(vocab_list))]
        vocab = {token: index for index, token in enumerate(vocab_list)}
        tok = _bert_pipeline(models.WordPiece(vocab, unk_token="[UNK]", continuing_subword_prefix="##"))
        tok.add_special_tokens(list(SPECIAL_TOKENS))  # already in the vocab: ids unchanged, but never split and skipped by decode
        return cls(tok, dict(zip(_ROLES, SPECIAL_TOKENS)))

    @classmethod
    def from_vocab_txt(cls, path: str | os.PathLike[str], lowercase: bool = True) -> TextTokenizer:
        """An existing BERT ``vocab.txt`` (one token per line, id = line number).

        BERT vocabularies have ``[PAD] [UNK] [CLS] [SEP] [MASK]`` but no BOS/EOS. When
        ``[BOS]``/``[EOS]`` are absent, ``bos`` maps to ``[CLS]`` and ``eos`` to ``[SEP]`` rather
        than adding tokens: the vocabulary size then stays equal to the pretrained embedding
        table, so a pretrained text encoder loads without resizing, and "[CLS] ... [SEP]" is
        already the start/end framing those encoders were trained with.
        ``lowercase=False`` for cased vocabularies (also disables accent stripping, like HF).
        """
        vocab = models.WordPiece.read_file(str(path))
        for role, name in zip(_REQUIRED, SPECIAL_TOKENS):
            if name not in vocab:
                raise ValueError(f"{path}: vocabulary lacks the {role} token {name!r}")
        tok = _bert_pipeline(models.WordPiece(vocab, unk_token="[UNK]"), lowercase=lowercase)
        return cls._with_bert_specials(tok)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> TextTokenizer:
        """A ``tokenizer.json`` (ours, or a Hugging Face BERT one). Its truncation/padding settings
        are dropped and its post-processor replaced by ``[CLS] $A [SEP]``."""
        return cls._with_bert_specials(Tokenizer.from_file(str(path)))

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> TextTokenizer:
        """Load what ``save`` wrote (falls back to ``from_file`` without ``vlp_tokenizer.json``)."""
        directory = Path(directory)
        meta_path = directory / META_FILE
        if not meta_path.is_file():
            return cls.from_file(directory / TOKENIZER_FILE)
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        tok = Tokenizer.from_file(str(directory / TOKENIZER_FILE))
        specials = {role: entry["token"] for role, entry in meta["special_tokens"].items()}
        out = cls(tok, specials, decoder_start=meta.get("decoder_start", "cls"))  # absent in older saves
        for role, entry in meta["special_tokens"].items():
            if getattr(out, f"{role}_id") != entry["id"]:
                raise ValueError(
                    f"{meta_path}: {role} token {entry['token']!r} has id {entry['id']} there but "
                    f"{getattr(out, f'{role}_id')} in {TOKENIZER_FILE}"
                )
        return out

    @classmethod
    def _with_bert_specials(cls, tok: Tokenizer) -> TextTokenizer:
        vocab = tok.get_vocab(with_added_tokens=True)
        names = dict(zip(_ROLES, SPECIAL_TOKENS))
        for role in _REQUIRED:
            if names[role] not in vocab:
                raise ValueError(f"vocabulary lacks the {role} token {names[role]!r}")
        if names["bos"] not in vocab:  # see from_vocab_txt for why CLS/SEP stand in
            names["bos"] = names["cls"]
        if names["eos"] not in vocab:
            names["eos"] = names["sep"]
        # Register them as special (ids unchanged: they are already in the vocabulary) so that
        # they are never split and decode(skip_special_tokens=True) drops them.
        tok.add_special_tokens(sorted(set(names.values())))
        return cls(tok, names)

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write ``tokenizer.json`` and ``vlp_tokenizer.json`` (special-token names and ids)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {
            "format_version": _META_VERSION,
            "special_tokens": {
                role: {"token": self.special_tokens[role], "id": getattr(self, f"{role}_id")}
                for role in _ROLES
            },
            "vocab_size": self.vocab_size,
            "decoder_start": self.decoder_start,
        }
        _atomic_write(directory / TOKENIZER_FILE, self._tok.to_str(pretty=True))
        _atomic_write(directory / META_FILE, json.dumps(meta, indent=2) + "\n")

    # -- use ------------------------------------------------------------------------------------

    @property
    def backend(self) -> Tokenizer:
        """The underlying ``tokenizers.Tokenizer`` (no truncation/padding configured)."""
        return self._tok

    def encode_batch(
        self, texts: Sequence[str], max_length: int
    ) -> tuple[torch.LongTensor, torch.LongTensor]:
        """``(input_ids [B, L], attention_mask [B, L])``, rows ``[CLS] tokens [SEP] [PAD]...``.

        Sequences longer than ``max_length`` are cut before ``[SEP]`` (which stays last); the
        batch is padded with ``pad_id`` to its longest row, so ``L <= max_length``.
        """
        if isinstance(texts, str):
            raise TypeError("encode_batch takes a sequence of strings, not one string")
        texts = list(texts)
        if not texts:
            empty = torch.zeros((0, 0), dtype=torch.long)
            return empty, empty.clone()
        tok = self._pipeline(max_length)
        # encode_batch_fast (tokenizers >= 0.21) skips computing character offsets we never use.
        encode = getattr(tok, "encode_batch_fast", tok.encode_batch)
        encodings = encode(texts)
        ids = torch.tensor([e.ids for e in encodings], dtype=torch.long)
        mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.long)
        return ids, mask

    def decode(self, ids: Sequence[int] | torch.Tensor, skip_special_tokens: bool = True) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self._tok.id_to_token(token_id)

    def get_vocab(self) -> dict[str, int]:
        return self._tok.get_vocab(with_added_tokens=True)

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"TextTokenizer(vocab_size={self.vocab_size}, pad_id={self.pad_id})"

    def _pipeline(self, max_length: int) -> Tokenizer:
        tok = self._configured.get(max_length)
        if tok is None:
            if max_length < 2:
                raise ValueError(f"max_length must be >= 2 to hold [CLS] and [SEP], got {max_length}")
            tok = Tokenizer.from_str(self._tok.to_str())
            tok.enable_truncation(max_length=max_length)
            tok.enable_padding(pad_id=self.pad_id, pad_token=self.special_tokens["pad"])
            self._configured[max_length] = tok
        return tok

    # Pickle as JSON text: DataLoader workers (spawn) receive the tokenizer through the collator.
    def __getstate__(self) -> dict[str, Any]:
        return {"tokenizer": self._tok.to_str(), "special_tokens": self.special_tokens, "decoder_start": self.decoder_start}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(Tokenizer.from_str(state["tokenizer"]), state["special_tokens"], state.get("decoder_start", "cls"))


def _bert_pipeline(model: models.Model, lowercase: bool = True) -> Tokenizer:
    tok = Tokenizer(model)
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=lowercase, lowercase=lowercase
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
