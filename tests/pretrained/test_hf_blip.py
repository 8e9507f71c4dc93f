"""Hugging Face BLIP -> vlp BLIP: ITC similarities, ITM logits and captioning LM logits/loss equal
transformers' (fp32, 1e-5)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

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


def test_blip_captioning_lm_matches_transformers(tmp_path: Path) -> None:
    theirs = randomise(transformers.BlipForConditionalGeneration(blip_config()))
    theirs.save_pretrained(tmp_path)
    ours, _ = load_pretrained("hf-blip", tmp_path)
    ids, mask, pixels = batch()
    labels = ids.masked_fill(mask == 0, -100)
    with torch.no_grad():
        ref = theirs(input_ids=ids, attention_mask=mask, pixel_values=pixels, labels=labels)
        logits = ours.lm_logits(ours.decode(ours.image_features(pixels), ids, mask, mode="causal"))
    # Padded positions (never read by the loss) differ: our masks let every query see itself (fusion.base.with_self),
    # so a padding query attends to its own key, which Hugging Face masks out.
    real = mask.bool()
    torch.testing.assert_close(logits[real], ref.logits[real], atol=1e-5, rtol=0)
    smoothing = theirs.config.text_config.label_smoothing  # HF's caption loss smooths labels
    shifted = F.cross_entropy(logits[:, :-1].reshape(-1, 99), labels[:, 1:].reshape(-1), label_smoothing=smoothing)
    torch.testing.assert_close(shifted, ref.loss, atol=1e-5, rtol=0)


def test_blip_broken_weights_name_the_keys(tmp_path: Path, break_weights) -> None:
    randomise(transformers.BlipForImageTextRetrieval(blip_config())).save_pretrained(tmp_path)
    break_weights(tmp_path / "model.safetensors", drop=("text_encoder.encoder.layer.1.crossattention.output.LayerNorm.bias",),
                  put={"itm_head.weight": torch.zeros(3, 32)})
    with pytest.raises(PretrainedError) as err:
        load_pretrained("hf-blip", tmp_path)
    assert "fusion.layers.1.norm_cross.bias" in str(err.value) and "itm_head.classifier.weight: (3, 32)" in str(err.value)
