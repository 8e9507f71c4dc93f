"""The tokenizers that imported weights were trained with, built from their files by `tokenizers`.

Weights are only useful with the token ids they learned, so each importer returns the matching
`TextTokenizer`: BERT/MiniLM WordPiece (``vocab.txt``), CLIP's lower-cased byte-level BPE with the
``</w>`` end-of-word suffix (``vocab.json`` + ``merges.txt``), RoBERTa's byte-level BPE. The
pipelines mirror what Hugging Face's own converters build (transformers' convert_slow_tokenizer),
and are built locally from the files: nothing is downloaded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

from vlp.data.tokenizer import TextTokenizer
from vlp.pretrained.common import PretrainedError

__all__ = ["BLIP_DEC", "BLIP_ENC", "bert_tokenizer", "blip_tokenizer", "clip_tokenizer", "roberta_tokenizer"]

CLIP_BOS, CLIP_EOS = "<|startoftext|>", "<|endoftext|>"
BLIP_DEC, BLIP_ENC = "[DEC]", "[ENC]"
# CLIP's pre-tokenisation: contractions, runs of letters, single digits, runs of other symbols.
_CLIP_SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def _bpe_files(directory: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    vocab_file, merges_file = directory / "vocab.json", directory / "merges.txt"
    for file in (vocab_file, merges_file):
        if not file.is_file():
            raise FileNotFoundError(f"{file} not found: a BPE tokenizer needs vocab.json and merges.txt")
    vocab = json.loads(vocab_file.read_text(encoding="utf-8"))
    merges: list[tuple[str, str]] = []
    for number, line in enumerate(merges_file.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#version"):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise PretrainedError(f"{merges_file}:{number}: expected two symbols per merge, got {line!r}")
        merges.append((parts[0], parts[1]))
    return vocab, merges


def clip_tokenizer(directory: str | os.PathLike[str]) -> TextTokenizer:
    """CLIP's tokenizer from ``vocab.json`` + ``merges.txt`` (Hugging Face CLIP and OpenAI's BPE).

    Texts become ``<|startoftext|> ... <|endoftext|>``; the EOS is the last real token, which is
    where the CLIP text tower pools (``pool='last'``). CLIP has no padding, unknown or mask token:
    ``<|endoftext|>`` stands in for them, as in Hugging Face's CLIP tokenizer (padding is masked out).
    """
    vocab, merges = _bpe_files(Path(directory))
    for token in (CLIP_BOS, CLIP_EOS):
        if token not in vocab:
            raise PretrainedError(f"{directory}/vocab.json lacks CLIP's {token!r}")
    tok = Tokenizer(
        models.BPE(vocab, merges, continuing_subword_prefix="", end_of_word_suffix="</w>", fuse_unk=False, unk_token=CLIP_EOS)
    )
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(_CLIP_SPLIT), behavior="removed", invert=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.Sequence([decoders.BPEDecoder(suffix="</w>"), decoders.ByteLevel()])
    tok.add_special_tokens([CLIP_BOS, CLIP_EOS])
    roles = {"pad": CLIP_EOS, "unk": CLIP_EOS, "cls": CLIP_BOS, "sep": CLIP_EOS, "mask": CLIP_EOS, "bos": CLIP_BOS, "eos": CLIP_EOS}
    return TextTokenizer(tok, roles)


def roberta_tokenizer(directory: str | os.PathLike[str]) -> TextTokenizer:
    """RoBERTa's byte-level BPE (``vocab.json`` + ``merges.txt``): ``<s> ... </s>``, ``<pad>`` id 1."""
    vocab, merges = _bpe_files(Path(directory))
    specials = {"pad": "<pad>", "unk": "<unk>", "cls": "<s>", "sep": "</s>", "mask": "<mask>", "bos": "<s>", "eos": "</s>"}
    absent = sorted({t for t in specials.values() if t not in vocab})
    if absent:
        raise PretrainedError(f"{directory}/vocab.json lacks RoBERTa's special tokens {absent}")
    tok = Tokenizer(models.BPE(vocab, merges, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(sorted(set(specials.values())))
    return TextTokenizer(tok, specials)


def bert_tokenizer(directory: str | os.PathLike[str]) -> TextTokenizer:
    """BERT/MiniLM WordPiece from ``vocab.txt``; lower-cased unless tokenizer_config.json says otherwise."""
    root = Path(directory)
    lowercase = True
    config = root / "tokenizer_config.json"
    if config.is_file():
        lowercase = bool(json.loads(config.read_text(encoding="utf-8")).get("do_lower_case", True))
    if not (root / "vocab.txt").is_file():
        raise FileNotFoundError(f"{root / 'vocab.txt'} not found: a BERT tokenizer needs its WordPiece vocabulary")
    return TextTokenizer.from_vocab_txt(root / "vocab.txt", lowercase=lowercase)


def blip_tokenizer(directory: str | os.PathLike[str], bos_token_id: int | None = None) -> TextTokenizer:
    """BLIP's tokenizer: BERT's WordPiece (``vocab.txt``) plus ``[DEC]`` and ``[ENC]``, appended in
    that order as BLIP's ``init_tokenizer`` adds them (ids 30522 and 30523 for BERT's vocabulary).

    Texts still encode as ``[CLS] words [SEP]``: that is what Hugging Face's BlipProcessor gives and
    what its retrieval model reads at position 0 for ITC and ITM (the original LAVIS code put
    ``[ENC]`` there for ITM; transformers does not, and the converted weights are checked against
    transformers). ``[DEC]`` is the bos token and the decoder start (``decoder_start="bos"``): Hugging
    Face's ``BlipForConditionalGeneration.generate`` replaces ``input_ids[:, 0]`` by it. Its forward
    pass (the caption loss) uses the ids as given, and so does vlp's LM objective.
    ``bos_token_id``: the checkpoint's ``text_config.bos_token_id``; a different ``[DEC]`` id means
    the vocabulary is not the one the weights were trained with, an error.
    """
    base = bert_tokenizer(directory)
    tok = base.backend
    tok.add_special_tokens([BLIP_DEC, BLIP_ENC])  # appended after vocab.txt (kept where vocab.txt has them)
    tokenizer = TextTokenizer(tok, {**base.special_tokens, "bos": BLIP_DEC}, decoder_start="bos")
    if bos_token_id is not None and tokenizer.bos_id != bos_token_id:
        raise PretrainedError(
            f"{directory}/vocab.txt puts {BLIP_DEC} at id {tokenizer.bos_id} but the BLIP config's bos_token_id is "
            f"{bos_token_id}: the vocabulary does not belong to these weights"
        )
    return tokenizer
