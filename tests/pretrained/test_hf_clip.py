"""Hugging Face CLIPModel -> vlp: image/text embeddings and logits equal transformers' (fp32, 1e-5)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vlp.pretrained import PretrainedError, load_pretrained

transformers = pytest.importorskip("transformers")


def randomise(model: torch.nn.Module) -> None:
    """Random norms and biases too (HF zero/one-inits them), so every mapped tensor matters."""
    for name, param in model.named_parameters():
        if param.ndim == 1 or name.endswith("bias"):
            torch.nn.init.normal_(param, mean=1.0 if "norm" in name and name.endswith("weight") else 0.0, std=0.1)


def save_tiny_clip(directory: Path, vocab, act: str = "quick_gelu") -> "transformers.CLIPModel":
    text = dict(vocab_size=523, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=16, hidden_act=act, bos_token_id=519, eos_token_id=520, pad_token_id=520)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
                  patch_size=8, hidden_act=act)
    theirs = transformers.CLIPModel(transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=24)).eval()
    randomise(theirs)
    theirs.save_pretrained(directory)
    vocab(directory)
    return theirs


@pytest.mark.parametrize("act", ["quick_gelu", "gelu"])
def test_hf_clip_matches_transformers(tmp_path: Path, clip_vocab, act: str) -> None:
    theirs = save_tiny_clip(tmp_path, clip_vocab, act)
    ours, tokenizer = load_pretrained("hf-clip", tmp_path)
    assert tokenizer is not None and not ours.training
    ids, mask = tokenizer.encode_batch(["a cat on a mat", "dog", "a dog on a cat on a mat!"], max_length=16)
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = theirs(input_ids=ids, attention_mask=mask, pixel_values=pixels)
        image, text = ours.encode_image(pixels), ours.encode_text(ids, mask)
        logits = ours.logit_scale() * image @ text.T
    torch.testing.assert_close(image, ref.image_embeds, atol=1e-5, rtol=0)
    torch.testing.assert_close(text, ref.text_embeds, atol=1e-5, rtol=0)
    torch.testing.assert_close(logits, ref.logits_per_image, atol=1e-5, rtol=0)


def test_hf_clip_tokenizer_matches_transformers(tmp_path: Path, clip_vocab) -> None:
    clip_vocab(tmp_path)
    from vlp.pretrained.tokenizers import clip_tokenizer

    texts = ["A cat on  a mat!", "dog, DOG 42 don't café", "  ca t\tmat  "]
    ids, mask = clip_tokenizer(tmp_path).encode_batch(texts, max_length=32)
    expected = transformers.CLIPTokenizer.from_pretrained(str(tmp_path))(texts)["input_ids"]
    assert [row[m.bool()].tolist() for row, m in zip(ids, mask)] == expected


def test_hf_clip_broken_weights_name_the_keys(tmp_path: Path, clip_vocab, break_weights) -> None:
    save_tiny_clip(tmp_path, clip_vocab)
    break_weights(tmp_path / "model.safetensors", drop=("text_model.final_layer_norm.bias",),
                  put={"vision_model.extra.weight": torch.zeros(2), "visual_projection.weight": torch.zeros(25, 32)})
    with pytest.raises(PretrainedError) as err:
        load_pretrained("hf-clip", tmp_path)
    message = str(err.value)
    assert "text_encoder.final_norm.bias" in message and "vision_model.extra.weight" in message
    assert "image_proj.weight: (25, 32)" in message and "(24, 32) in vlp" in message
