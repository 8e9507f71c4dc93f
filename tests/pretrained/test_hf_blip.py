"""Hugging Face BLIP -> vlp BLIP: ITC similarities, ITM logits and captioning LM logits/loss equal
transformers' (fp32, 1e-5)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vlp.pretrained import PretrainedError, load_pretrained

transformers = pytest.importorskip("transformers")


def blip_config() -> "transformers.BlipConfig":
    text = dict(vocab_size=99, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=16, encoder_hidden_size=32, bos_token_id=3, pad_token_id=0, sep_token_id=4)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8)
    return transformers.BlipConfig(text_config=text, vision_config=vision, projection_dim=24, image_text_hidden_size=24)


def randomise(model: torch.nn.Module) -> torch.nn.Module:
    for name, param in model.named_parameters():  # random norms and biases: every mapped tensor matters
        if param.ndim == 1:
            torch.nn.init.normal_(param, mean=1.0 if "norm" in name.lower() and name.endswith("weight") else 0.0, std=0.1)
    return model.eval()


def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ids = torch.randint(5, 99, (3, 9))
    ids[:, 0] = 3
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    return ids, mask, torch.randn(3, 3, 32, 32)


def test_blip_retrieval_itc_and_itm_match_transformers(tmp_path: Path) -> None:
    theirs = randomise(transformers.BlipForImageTextRetrieval(blip_config()))
    theirs.save_pretrained(tmp_path)
    ours, _ = load_pretrained("hf-blip", tmp_path)
    ids, mask, pixels = batch()
    with torch.no_grad():
        itm = theirs(input_ids=ids, attention_mask=mask, pixel_values=pixels, use_itm_head=True).itm_score
        sims = theirs(input_ids=ids, attention_mask=mask, pixel_values=pixels, use_itm_head=False).itm_score
        image = ours.image_features(pixels)
        our_sims = ours.project_image(image) @ ours.encode_text(ids, mask).T
        our_itm = ours.itm_logits(ours.fuse(image, ours.text_for_fusion(ids, mask)))
    torch.testing.assert_close(our_sims, sims, atol=1e-5, rtol=0)
    torch.testing.assert_close(our_itm, itm, atol=1e-5, rtol=0)


def test_blip_captioning_lm_matches_transformers(tmp_path: Path, caption_lm_matches) -> None:
    theirs = randomise(transformers.BlipForConditionalGeneration(blip_config()))
    theirs.save_pretrained(tmp_path)
    ours, _ = load_pretrained("hf-blip", tmp_path)
    # HF's caption loss smooths labels
    caption_lm_matches(theirs, ours, *batch(), label_smoothing=theirs.config.text_config.label_smoothing)


def test_blip_broken_weights_name_the_keys(tmp_path: Path, break_weights) -> None:
    randomise(transformers.BlipForImageTextRetrieval(blip_config())).save_pretrained(tmp_path)
    break_weights(tmp_path / "model.safetensors", drop=("text_encoder.encoder.layer.1.crossattention.output.LayerNorm.bias",),
                  put={"itm_head.weight": torch.zeros(3, 32)})
    with pytest.raises(PretrainedError) as err:
        load_pretrained("hf-blip", tmp_path)
    assert "fusion.layers.1.norm_cross.bias" in str(err.value) and "itm_head.classifier.weight: (3, 32)" in str(err.value)


WORDS = ["a", "picture", "of", "cat", "dog", "on", "the", "mat", "red", "two", "##s", "sitting"]


def blip_with_vocab(directory: Path, model_class: type) -> tuple[torch.nn.Module, "transformers.BlipProcessor"]:
    """A BLIP checkpoint with a 97-token vocab.txt; [DEC] = 97 and [ENC] = 98 as BLIP's tokenizer adds them."""
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
    tokens += [f"[unused{i}]" for i in range(97 - len(tokens))]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    config = blip_config()
    config.text_config.bos_token_id, config.text_config.sep_token_id = 97, 3  # [DEC], [SEP]
    torch.manual_seed(0)
    theirs = randomise(model_class(config))
    theirs.save_pretrained(directory)
    tokenizer = transformers.BertTokenizer(str(directory / "vocab.txt"))
    tokenizer.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    return theirs, transformers.BlipProcessor(transformers.BlipImageProcessor(), tokenizer)


TEXTS = ["A red cat sitting on the mat", "two dogs"]


def test_blip_tokenizer_and_itm_follow_transformers_first_token(tmp_path: Path) -> None:
    """Raw text through BlipProcessor and through vlp's hf-blip tokenizer: same ids ([CLS] first, as
    transformers' retrieval model reads it), same ITM and ITC outputs."""
    theirs, processor = blip_with_vocab(tmp_path, transformers.BlipForImageTextRetrieval)
    ours, tokenizer = load_pretrained("hf-blip", tmp_path)
    assert tokenizer is not None and (tokenizer.bos_id, tokenizer.token_to_id("[ENC]")) == (97, 98)
    reference = processor.tokenizer(TEXTS, padding=True, return_tensors="pt", return_token_type_ids=False)
    ids, mask = tokenizer.encode_batch(TEXTS, max_length=16)
    assert torch.equal(ids, reference["input_ids"]) and torch.equal(mask, reference["attention_mask"])
    assert bool((ids[:, 0] == tokenizer.cls_id).all())
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        itm = theirs(input_ids=ids, attention_mask=mask, pixel_values=pixels, use_itm_head=True).itm_score
        sims = theirs(input_ids=ids, attention_mask=mask, pixel_values=pixels, use_itm_head=False).itm_score
        image = ours.image_features(pixels)
        our_itm = ours.itm_logits(ours.fuse(image, ours.text_for_fusion(ids, mask)))
        our_sims = ours.project_image(image) @ ours.encode_text(ids, mask).T
    torch.testing.assert_close(our_itm, itm, atol=1e-5, rtol=0)
    torch.testing.assert_close(our_sims, sims, atol=1e-5, rtol=0)


def test_blip_captioning_starts_from_dec_like_transformers(tmp_path: Path) -> None:
    """`GenerationConfig.for_tokenizer` of the hf-blip tokenizer starts at [DEC] and stops at [SEP], so
    greedy captions equal BlipForConditionalGeneration.generate's, with and without a text prompt."""
    from vlp.generation import GenerationConfig, generate

    theirs, processor = blip_with_vocab(tmp_path, transformers.BlipForConditionalGeneration)
    ours, tokenizer = load_pretrained("hf-blip", tmp_path)
    assert tokenizer is not None
    settings = GenerationConfig.for_tokenizer(tokenizer, max_new_tokens=5)
    assert (settings.bos_token_id, settings.eos_token_id, settings.pad_token_id) == (97, 3, 0)
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = theirs.generate(pixel_values=pixels, max_new_tokens=5, do_sample=False, num_beams=1)
        out = generate(ours, pixels, settings).sequences
        assert bool((ref[:, 0] == 97).all())
        assert torch.equal(out[:, : ref.shape[1] - 1], ref[:, 1:]) and bool((out[:, ref.shape[1] - 1:] == 0).all())
        # A prompt: transformers swaps [CLS] for [DEC] and drops the final [SEP]; the same ids for vlp.
        prompt = processor.tokenizer(["a picture of"] * 2, return_tensors="pt", return_token_type_ids=False)
        ref = theirs.generate(pixel_values=pixels, input_ids=prompt["input_ids"].clone(), max_new_tokens=5, do_sample=False)
        ids, _ = tokenizer.encode_batch(["a picture of"] * 2, max_length=16)
        ids = torch.cat([torch.full((2, 1), tokenizer.decoder_start_id), ids[:, 1:-1]], dim=1)
        out = generate(ours, pixels, settings, prompt_ids=ids).sequences
    assert torch.equal(ref[:, : ids.shape[1]], ids)
    assert torch.equal(out[:, : ref.shape[1] - ids.shape[1]], ref[:, ids.shape[1]:])


def test_blip_vocabulary_that_does_not_fit_the_config_is_refused(tmp_path: Path) -> None:
    blip_with_vocab(tmp_path, transformers.BlipForImageTextRetrieval)
    with (tmp_path / "vocab.txt").open("a", encoding="utf-8") as file:
        file.write("extra\n")  # [DEC] moves to 98
    with pytest.raises(PretrainedError, match=r"\[DEC\] at id 98 .* bos_token_id is 97"):
        load_pretrained("hf-blip", tmp_path)
