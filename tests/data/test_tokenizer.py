"""TextTokenizer: training, encode format, truncation, padding, persistence, BERT vocab files."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer

from vlp.data.tokenizer import META_FILE, SPECIAL_TOKENS, TOKENIZER_FILE, TextTokenizer

COCO_JSON = Path("/work/shared/data/coco-sample/dataset_coco.json")

FALLBACK_CAPTIONS = [
    "A man riding a wave on top of a surfboard.",
    "Two dogs are running through the green grass.",
    "A red double decker bus driving down a street.",
    "A plate of food with broccoli and a fork.",
    "The cat is sleeping on the left side of the couch.",
] * 20


@pytest.fixture(scope="module")
def captions() -> list[str]:
    if COCO_JSON.is_file():
        images = json.loads(COCO_JSON.read_text())["images"]
        return [s["raw"] for im in images for s in im["sentences"]]
    return FALLBACK_CAPTIONS


@pytest.fixture(scope="module")
def tok(captions) -> TextTokenizer:
    return TextTokenizer.train_wordpiece(captions, vocab_size=1000)


BERT_VOCAB = [
    "[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
    ".", ",", "a", "the", "dog", "cat", "run", "##ning", "##s", "on", "left", "of", "cafe", "red",
]  # fmt: skip


@pytest.fixture
def vocab_txt(tmp_path) -> Path:
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(BERT_VOCAB) + "\n", encoding="utf-8")
    return path


def test_special_token_ids(tok):
    ids = [tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id, tok.bos_id, tok.eos_id]
    assert ids == list(range(7))
    assert [tok.id_to_token(i) for i in ids] == list(SPECIAL_TOKENS)
    assert tok.vocab_size == len(tok.get_vocab()) <= 1000
    assert tok.vocab_size > 500  # the captions are rich enough to fill most of it


def test_round_trip_is_normalised_text(tok, captions):
    texts = [re.sub(r"[^A-Za-z ]", " ", c) for c in captions[:64]]  # words only
    ids, mask = tok.encode_batch(texts, max_length=128)
    assert (ids != tok.unk_id).all()
    for text, row, m in zip(texts, ids, mask):
        assert tok.decode(row[m.bool()]) == " ".join(text.lower().split())
    # Accents are stripped, case is folded, punctuation is re-attached by the decoder.
    t = TextTokenizer.train_wordpiece(["Café au lait, please!"] * 3, vocab_size=100)
    ids, _ = t.encode_batch(["CAFÉ au lait, please!"], max_length=32)
    assert t.decode(ids[0]) == "cafe au lait, please!"
    assert t.decode(ids[0], skip_special_tokens=False).startswith("[CLS] cafe")


def test_encode_format_and_padding_to_longest(tok):
    texts = ["a dog", "a brown bear sitting in the grass", "bear"]
    ids, mask = tok.encode_batch(texts, max_length=64)
    assert ids.dtype == torch.long and mask.dtype == torch.long and ids.shape == mask.shape
    lengths = mask.sum(1)
    assert ids.shape[1] == lengths.max() < 64  # padded to the longest row, not to max_length
    assert (ids[:, 0] == tok.cls_id).all()
    for row, n in zip(ids, lengths):
        assert row[n - 1] == tok.sep_id
        assert (row[n:] == tok.pad_id).all()
        assert (row[1 : n - 1] != tok.sep_id).all()
    assert set(mask.unique().tolist()) == {0, 1}
    # Rows are independent of their batch mates.
    alone, _ = tok.encode_batch(["a dog"], max_length=64)
    assert torch.equal(alone[0], ids[0, : alone.shape[1]])


def test_truncation_keeps_sep(tok):
    text = "a large brown bear is sitting in the green grass next to a tree"
    full, _ = tok.encode_batch([text], max_length=128)
    assert full.shape[1] > 8
    cut, mask = tok.encode_batch([text, "a dog"], max_length=8)
    assert cut.shape == (2, 8) and mask[0].all()
    assert cut[0, -1] == tok.sep_id
    assert torch.equal(cut[0, :7], full[0, :7])  # [CLS] + the first 6 tokens
    # Several max_length values coexist without leaking settings into each other or the saved file.
    again, _ = tok.encode_batch([text], max_length=128)
    assert torch.equal(again, full)
    assert tok.backend.truncation is None and tok.backend.padding is None


def test_encode_edge_cases(tok):
    ids, mask = tok.encode_batch([], max_length=16)
    assert ids.shape == (0, 0) and mask.shape == (0, 0)
    ids, _ = tok.encode_batch([""], max_length=16)
    assert ids.tolist() == [[tok.cls_id, tok.sep_id]]
    ids, _ = tok.encode_batch(["zzzzqqq \u2603"], max_length=16)  # out-of-vocabulary characters
    assert tok.unk_id in ids[0].tolist()
    with pytest.raises(ValueError):
        tok.encode_batch(["a"], max_length=1)
    with pytest.raises(TypeError):
        tok.encode_batch("a dog", max_length=8)
    assert tok.decode(torch.tensor([tok.cls_id, tok.sep_id])) == ""


def test_save_load_round_trip(tok, captions, tmp_path):
    tok.encode_batch(["warm the per-length cache"], max_length=5)
    tok.save(tmp_path / "tok")
    assert sorted(p.name for p in (tmp_path / "tok").iterdir()) == sorted([TOKENIZER_FILE, META_FILE])
    meta = json.loads((tmp_path / "tok" / META_FILE).read_text())
    assert meta["special_tokens"]["eos"] == {"token": "[EOS]", "id": 6}
    saved = json.loads((tmp_path / "tok" / TOKENIZER_FILE).read_text())
    assert saved["truncation"] is None and saved["padding"] is None

    loaded = TextTokenizer.load(tmp_path / "tok")
    assert loaded.get_vocab() == tok.get_vocab()
    assert loaded.special_tokens == tok.special_tokens and loaded.vocab_size == tok.vocab_size
    for a, b in zip(tok.encode_batch(captions[:50], 20), loaded.encode_batch(captions[:50], 20)):
        assert torch.equal(a, b)
    # Saving again is byte-identical (deterministic, atomic replace over existing files).
    loaded.save(tmp_path / "tok2")
    for name in (TOKENIZER_FILE, META_FILE):
        assert (tmp_path / "tok" / name).read_bytes() == (tmp_path / "tok2" / name).read_bytes()
    # A directory holding only a tokenizer.json still loads.
    (tmp_path / "tok2" / META_FILE).unlink()
    assert TextTokenizer.load(tmp_path / "tok2").get_vocab() == tok.get_vocab()


def test_load_detects_inconsistent_metadata(tok, tmp_path):
    tok.save(tmp_path)
    meta = json.loads((tmp_path / META_FILE).read_text())
    meta["special_tokens"]["mask"]["id"] = 99
    (tmp_path / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="mask"):
        TextTokenizer.load(tmp_path)


def test_pickle(tok):
    clone = pickle.loads(pickle.dumps(tok))
    assert clone.mask_id == tok.mask_id
    assert torch.equal(clone.encode_batch(["a dog"], 8)[0], tok.encode_batch(["a dog"], 8)[0])


def test_from_vocab_txt(vocab_txt):
    t = TextTokenizer.from_vocab_txt(vocab_txt)
    assert t.vocab_size == len(BERT_VOCAB)
    assert (t.pad_id, t.unk_id, t.cls_id, t.sep_id, t.mask_id) == (0, 2, 3, 4, 5)
    assert (t.bos_id, t.eos_id) == (t.cls_id, t.sep_id)  # BERT vocab: no [BOS]/[EOS]
    ids, mask = t.encode_batch(["The dogs running, LEFT of a Café.", "zebra [MASK]"], max_length=32)
    v = {w: i for i, w in enumerate(BERT_VOCAB)}
    expected = ["[CLS]", "the", "dog", "##s", "run", "##ning", ",", "left", "of", "a", "cafe", ".", "[SEP]"]
    assert ids[0].tolist() == [v[w] for w in expected]
    assert ids[1, :4].tolist() == [v["[CLS]"], v["[UNK]"], v["[MASK]"], v["[SEP]"]]
    assert mask[1].sum() == 4
    assert t.decode(ids[0]) == "the dogs running, left of a cafe."


def test_from_vocab_txt_requires_bert_specials(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\ndog\n")
    with pytest.raises(ValueError, match=r"\[MASK\]"):
        TextTokenizer.from_vocab_txt(path)


def test_from_file_hf_style(vocab_txt, tmp_path):
    # A tokenizer.json as Hugging Face writes them for BERT: truncation/padding configured inside.
    hf = TextTokenizer.from_vocab_txt(vocab_txt).backend
    hf.enable_truncation(max_length=4)
    hf.enable_padding(length=10)
    hf.save(str(tmp_path / "tokenizer.json"))
    t = TextTokenizer.from_file(tmp_path / "tokenizer.json")
    ids, _ = t.encode_batch(["the red cat of the dog"], max_length=32)
    assert ids.shape == (1, 8)  # neither the file's truncation to 4 nor its padding to 10
    assert (t.bos_id, t.eos_id) == (3, 4)
    # Our own tokenizer.json (with [BOS]/[EOS]) keeps them.
    ours = TextTokenizer.train_wordpiece(FALLBACK_CAPTIONS, vocab_size=200)
    ours.backend.save(str(tmp_path / "ours.json"))
    assert (TextTokenizer.from_file(tmp_path / "ours.json").bos_id, ours.bos_id) == (5, 5)


def test_parity_with_transformers_bert(vocab_txt):
    transformers = pytest.importorskip("transformers")
    ref = transformers.BertTokenizerFast(vocab=str(vocab_txt), do_lower_case=True)
    t = TextTokenizer.from_vocab_txt(vocab_txt)
    texts = ["The dogs running, LEFT of a Café.", "a red cat", "zebra on the left of the red dog running"]
    out = ref(texts, padding="longest", truncation=True, max_length=9, return_tensors="pt")
    ids, mask = t.encode_batch(texts, max_length=9)
    assert torch.equal(ids, out["input_ids"]) and torch.equal(mask, out["attention_mask"])


def test_saved_file_is_plain_tokenizers_json(tok, tmp_path):
    tok.save(tmp_path)
    raw = Tokenizer.from_file(str(tmp_path / TOKENIZER_FILE))
    assert raw.encode("a dog").ids == tok.encode_batch(["a dog"], 16)[0][0].tolist()


def test_training_is_deterministic() -> None:
    """Same captions, same vocabulary and ids: a seeded run must be reproducible (HF's trainer is not)."""
    captions = [f"a {c} {s} left of {n} {c2} {s}s" for c in ("red", "blue", "green") for s in ("circle", "square", "star")
                for n in ("two", "three") for c2 in ("pink", "gray")]
    vocabs = [TextTokenizer.train_wordpiece(captions, vocab_size=120).get_vocab() for _ in range(3)]
    assert vocabs[0] == vocabs[1] == vocabs[2]
    tok = TextTokenizer.train_wordpiece(captions, vocab_size=120)
    ids, _ = tok.encode_batch(["A red circle, left of two stars!"], 32)
    assert tok.unk_id not in ids[0].tolist()  # punctuation and unseen sub-words never become [UNK]


def test_decoder_start_defaults_to_cls_and_survives_save_load_and_pickle(tok, tmp_path):
    """BLIP's tokenizer starts captions at its bos ([DEC]); that choice must travel with the tokenizer."""
    assert tok.decoder_start == "cls" and tok.decoder_start_id == tok.cls_id
    blip_like = TextTokenizer(Tokenizer.from_str(tok.backend.to_str()), tok.special_tokens, decoder_start="bos")
    assert blip_like.decoder_start_id == tok.bos_id != tok.cls_id
    blip_like.save(tmp_path / "t")
    for clone in (TextTokenizer.load(tmp_path / "t"), pickle.loads(pickle.dumps(blip_like))):
        assert clone.decoder_start_id == tok.bos_id
    meta = json.loads((tmp_path / "t" / META_FILE).read_text())
    del meta["decoder_start"]  # tokenizers saved before the field existed load as "cls"
    (tmp_path / "t" / META_FILE).write_text(json.dumps(meta))
    assert TextTokenizer.load(tmp_path / "t").decoder_start_id == tok.cls_id
    with pytest.raises(ValueError, match="decoder_start"):
        TextTokenizer(Tokenizer.from_str(tok.backend.to_str()), tok.special_tokens, decoder_start="sep")
