"""Hugging Face GIT -> vlp GIT: LM logits at the text positions, the caption loss and greedy generation
equal transformers' (fp32, 1e-5; same token ids), and broken checkpoints fail naming what is wrong."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from vlp.cli.main import main
from vlp.generation import GenerationConfig, generate
from vlp.pretrained import PretrainedError, load_pretrained

transformers = pytest.importorskip("transformers")

VOCAB, IMAGE_TOKENS = 99, 17  # (32 / 8) ** 2 patches + [CLS]


def git_config(**overrides: object) -> "transformers.GitConfig":
    vision = dict(hidden_size=24, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8)
    # initializer_range 0.2: weights large enough that different images give different captions.
    text = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                max_position_embeddings=16, initializer_range=0.2, bos_token_id=3, eos_token_id=4, pad_token_id=0)
    return transformers.GitConfig(vision_config=vision, **{**text, **overrides})


def save_git(directory: Path, **overrides: object) -> "transformers.GitForCausalLM":
    torch.manual_seed(0)
    model = transformers.GitForCausalLM(git_config(**overrides)).eval()
    with torch.no_grad():  # random norms and biases: every mapped tensor matters
        for name, param in model.named_parameters():
            if param.ndim == 1:
                torch.nn.init.normal_(param, mean=1.0 if name.endswith("weight") else 0.0, std=0.1)
    model.save_pretrained(directory)
    return model


def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(5, VOCAB, (3, 9), generator=generator)
    ids[:, 0] = 3  # [CLS] = GIT's bos
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    return ids, mask, torch.randn(3, 3, 32, 32, generator=generator)


@pytest.mark.parametrize("tied", [False, True])
def test_git_logits_and_caption_loss_match_transformers(tmp_path: Path, tied: bool, caption_lm_matches) -> None:
    theirs = save_git(tmp_path, tie_word_embeddings=tied)
    ours, _ = load_pretrained("hf-git", tmp_path)
    assert ours.cfg.heads.tie_word_embeddings is tied
    caption_lm_matches(theirs, ours, *batch(), image_tokens=IMAGE_TOKENS)


def test_git_greedy_generation_matches_transformers(tmp_path: Path) -> None:
    theirs = save_git(tmp_path)
    ours, _ = load_pretrained("hf-git", tmp_path)
    _, _, pixels = batch()
    prompt = torch.tensor([[3, 17, 42], [3, 60, 8], [3, 25, 91]])  # [CLS] + a question (GIT VQA)
    settings = GenerationConfig(bos_token_id=3, eos_token_id=4, pad_token_id=0, max_new_tokens=6)
    with torch.no_grad():
        for prompt_ids in (None, prompt):
            start = torch.full((3, 1), 3) if prompt_ids is None else prompt_ids
            ref = theirs.generate(pixel_values=pixels, input_ids=start, max_new_tokens=6, do_sample=False, num_beams=1)
            out = generate(ours, pixels, settings, prompt_ids=prompt_ids).sequences
            uncached = generate(ours, pixels, replace(settings, use_cache=False), prompt_ids=prompt_ids)
            assert torch.equal(uncached.sequences, out)
            new = ref[:, start.shape[1]:]  # HF stops when every row has ended; ours pads the same way
            assert torch.equal(out[:, : new.shape[1]], new), (out, new)
            assert bool((out[:, new.shape[1]:] == 0).all())
    captions = generate(ours, pixels, settings).sequences
    assert len({tuple(row.tolist()) for row in captions}) > 1  # the image matters, so the test can fail


def test_git_tokenizer_and_convert_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """vocab.txt gives BERT's tokenizer with GIT's framing; `vlp convert-weights hf-git` round-trips."""
    save_git(tmp_path / "git", vocab_size=40, bos_token_id=2, eos_token_id=3)
    words = ["a", "cat", "on", "the", "mat", "dog", "##s", "red"]
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words + [f"[unused{i}]" for i in range(40 - 5 - len(words))]
    (tmp_path / "git" / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    ours, tokenizer = load_pretrained("hf-git", tmp_path / "git")
    assert tokenizer is not None
    text = ["A cat on the mat", "red dogs"]
    reference = transformers.BertTokenizer(str(tmp_path / "git" / "vocab.txt"))(text, padding=True, return_tensors="pt")
    ids, mask = tokenizer.encode_batch(text, max_length=16)
    assert torch.equal(ids, reference["input_ids"]) and torch.equal(mask, reference["attention_mask"])
    settings = GenerationConfig.for_tokenizer(tokenizer)
    config = json.loads((tmp_path / "git" / "config.json").read_text())
    assert (settings.bos_token_id, settings.eos_token_id) == (config["bos_token_id"], config["eos_token_id"])

    assert main(["convert-weights", "hf-git", str(tmp_path / "git"), str(tmp_path / "out")]) == 0
    assert "ImageTextModel" in capsys.readouterr().out
    converted, converted_tokenizer = load_pretrained("vlp", tmp_path / "out")
    assert converted_tokenizer is not None and converted_tokenizer.cls_id == tokenizer.cls_id
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = ours.lm_logits(ours.decode(ours.image_features(pixels), ids, mask))
        after = converted.lm_logits(converted.decode(converted.image_features(pixels), ids, mask))
    assert torch.equal(before, after)


def test_git_broken_weights_name_the_keys(tmp_path: Path, break_weights) -> None:
    save_git(tmp_path)
    break_weights(tmp_path / "model.safetensors", drop=("git.encoder.layer.1.output.LayerNorm.bias",),
                  put={"git.visual_projection.visual_projection.0.weight": torch.zeros(32, 20)})
    with pytest.raises(PretrainedError) as err:
        load_pretrained("hf-git", tmp_path)
    message = str(err.value)
    assert "fusion.blocks.blocks.1.norm2.bias" in message and "fusion.image_proj.0.weight: (32, 20)" in message


def test_git_unsupported_variants_are_refused(tmp_path: Path) -> None:
    save_git(tmp_path, num_image_with_embedding=2)
    with pytest.raises(PretrainedError, match="video GIT"):
        load_pretrained("hf-git", tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(num_image_with_embedding=None, hidden_act="relu")
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(PretrainedError, match="hidden_act 'relu'"):
        load_pretrained("hf-git", tmp_path)
