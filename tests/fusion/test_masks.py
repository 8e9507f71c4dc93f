"""The shared fusion masks, checked against hand-written matrices."""

from __future__ import annotations

import torch

from vlp.fusion.base import image_to_text_mask, joint_mask, select_position, text_self_mask, with_self
from vlp.layers import seq2seq_mask

T, F = True, False


def as_list(mask: torch.Tensor) -> list:
    return mask.squeeze(1).tolist()


def test_joint_bidirectional_with_padding() -> None:
    # 2 text tokens (second is padding), 2 image tokens (all real).
    mask = joint_mask("bidirectional", 2, 2, torch.tensor([[1, 0]]), None, None, torch.device("cpu"))
    assert as_list(mask) == [[
        [T, F, T, T],
        [T, T, T, T],  # the padded query sees itself too (no fully masked row, no NaN)
        [T, F, T, T],
        [T, F, T, T],
    ]]


def test_joint_causal_image_never_sees_text() -> None:
    mask = joint_mask("causal", 3, 2, None, None, None, torch.device("cpu"))
    assert as_list(mask) == [[
        [T, F, F, T, T],
        [T, T, F, T, T],
        [T, T, T, T, T],
        [F, F, F, T, T],
        [F, F, F, T, T],
    ]]


def test_joint_seq2seq_prefix_is_bidirectional_and_per_sample() -> None:
    mask = joint_mask("seq2seq", 3, 1, None, None, torch.tensor([2, 0]), torch.device("cpu"))
    assert as_list(mask) == [
        [  # prefix 2: text 0-1 and the image see each other; text 2 is causal
            [T, T, F, T],
            [T, T, F, T],
            [T, T, T, T],
            [T, T, F, T],
        ],
        [  # prefix 0 = VLP's seq2seq mask: image sees image only, text sees image + earlier text
            [T, F, F, T],
            [T, T, F, T],
            [T, T, T, T],
            [F, F, F, T],
        ],
    ]


def test_seq2seq_without_prefix_equals_causal() -> None:
    cpu = torch.device("cpu")
    text_mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    causal = joint_mask("causal", 4, 3, text_mask, None, None, cpu)
    seq2seq = joint_mask("seq2seq", 4, 3, text_mask, None, None, cpu)
    assert torch.equal(causal.expand_as(seq2seq), seq2seq)


def test_seq2seq_is_the_prefix_lm_mask_in_image_first_order() -> None:
    """GIT/SimVLM/VLP write [image; text] and make image + text prefix the prefix of a prefix-LM mask."""
    text_len, image_len, prefix = 4, 3, torch.tensor([0, 1, 4])
    ours = joint_mask("seq2seq", text_len, image_len, None, None, prefix, torch.device("cpu"))
    perm = torch.cat([torch.arange(text_len, text_len + image_len), torch.arange(text_len)])
    reference = seq2seq_mask(image_len + prefix, image_len + text_len)
    assert torch.equal(ours[..., perm, :][..., perm], with_self(reference))


def test_text_self_mask_and_image_to_text() -> None:
    cpu = torch.device("cpu")
    assert as_list(text_self_mask("seq2seq", 3, None, torch.tensor([1]), cpu)) == [[[T, F, F], [T, T, F], [T, T, T]]]
    assert as_list(image_to_text_mask("seq2seq", 1, 3, torch.tensor([2]), cpu)) == [[[T, T, F]]]
    assert not image_to_text_mask("causal", 2, 3, None, cpu).any()


def test_select_position_handles_left_and_right_padding() -> None:
    tokens = torch.arange(8.0).reshape(2, 4, 1)
    right = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    assert select_position(tokens, right, "last").flatten().tolist() == [2.0, 7.0]
    assert select_position(tokens, right.flip(1), "last").flatten().tolist() == [3.0, 7.0]
    assert select_position(tokens, right, "first").flatten().tolist() == [0.0, 4.0]
