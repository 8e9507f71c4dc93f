"""VQA fine-tuning tasks: an answer classifier on the fused state, or answer generation with the LM.

Why the classifier head lives in the task, not the model: the model maps images and text to
features and knows nothing of VQA data -- the head's size is the answer vocabulary of one
dataset, which is data, not architecture. The task creates the head as a registered submodule, so
``task.state_dict()`` (what the trainer checkpoints) holds ``model.*`` and ``head.*`` together and
a fine-tuned run restores both; the pretrained model's own keys are unchanged, so a pre-training
checkpoint loads into ``task.model`` as it is. The answer strings travel next to the weights
(``AnswerVocab.save``, or the trainer's metadata), since a head without its vocabulary is useless.

``VQATask`` works for any model with a fusion that has a bidirectional mode and a pooled output
(ALBEF, BLIP's ITM encoder, ViLT, UNITER, METER, VLMo...). ``VQAGenerativeTask`` trains the
language-modelling path (BLIP/GIT/CoCa/SimVLM) on ``[CLS] question [SEP] answer [SEP]`` with the
loss on the answer tokens only, which is what ``vlp.adapt.vqa.rank_answers`` scores afterwards.
"""

from __future__ import annotations

import torch

from vlp.data.batch import Batch
from vlp.data.vqa import VQABatch, join_question_answer
from vlp.fusion import Fusion
from vlp.heads import VQAHead
from vlp.models import ImageTextModel
from vlp.objectives.linear_ce import linear_cross_entropy
from vlp.objectives.lm import lm_targets
from vlp.objectives.vqa import vqa_soft_loss
from vlp.tasks.base import LossOutput, Task

__all__ = ["VQAGenerativeTask", "VQATask", "answer_mode"]


class VQATask(Task):
    """Soft-score BCE over an answer vocabulary, from the fused pooled state of (image, question)."""

    def __init__(self, model: ImageTextModel, num_answers: int, hidden: int | None = None) -> None:
        super().__init__()
        if model.fusion is None:
            raise ValueError("VQA classification needs a model with a fusion module (a dual encoder has none)")
        if "bidirectional" not in model.fusion.modes:
            raise ValueError(
                f"VQA classification reads the bidirectional fused state; the {model.fusion.kind!r} fusion has only "
                f"{model.fusion.modes} (rank answers with vlp.adapt.vqa instead)"
            )
        self.model = model
        self.head = VQAHead(model.fusion.width, num_answers, hidden)

    @property
    def num_answers(self) -> int:
        return self.head.num_answers

    def logits(self, image: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[B, A] answer logits of B (image, question) pairs."""
        model = self.model
        feats = model.pair_features(image, input_ids, attention_mask, unimodal=False)
        fused = model.fuse(feats.image_for_fusion, feats.text_for_fusion, mode="bidirectional")
        if fused.pooled is None:
            raise ValueError(f"the {model.fusion.kind!r} fusion returns no pooled state to classify")  # type: ignore[union-attr]
        return self.head(fused.pooled)

    def forward(self, batch: Batch) -> LossOutput:
        targets = getattr(batch, "targets", None)
        if targets is None:
            raise ValueError("VQATask needs VQABatch.targets (build the VQACollator with num_answers=len(vocab))")
        if targets.shape[1] != self.num_answers:
            raise ValueError(f"targets cover {targets.shape[1]} answers but the head has {self.num_answers}")
        loss = vqa_soft_loss(self.logits(batch.image_input, batch.input_ids, batch.attention_mask), targets)
        return LossOutput(loss=loss, losses={"vqa_loss": loss.detach()})


def answer_mode(model: ImageTextModel) -> str:
    """How the LM path reads a question prefix: ``seq2seq`` (the question bidirectional, as GIT and
    SimVLM answer) where the module supports it, else ``causal`` (BLIP's decoder, ALBEF-style)."""
    module = model.decoder if model.decoder is not None else model.fusion
    if model.lm_head is None or not isinstance(module, Fusion):
        raise ValueError("answer generation/ranking needs a model with an LM head (model.heads.lm=true)")
    return "seq2seq" if "seq2seq" in module.modes else "causal"


class VQAGenerativeTask(Task):
    """LM loss on ``answer [SEP]`` given the image and the question (the question is never scored).

    The target is the question's normalised majority answer (``VQABatch.answer_ids``; build the
    collator with ``answer_length``).
    """

    def __init__(self, model: ImageTextModel, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.mode = answer_mode(model)
        self.model = model
        self.label_smoothing = label_smoothing

    def forward(self, batch: Batch) -> LossOutput:
        if not isinstance(batch, VQABatch) or batch.answer_ids is None or batch.answer_mask is None:
            raise ValueError("VQAGenerativeTask needs VQABatch.answer_ids (build the VQACollator with answer_length)")
        model = self.model
        # Padding ids are masked out of attention and loss, so any id serves; 0 is [PAD] in our tokenizers.
        ids, mask, prefix = join_question_answer(batch.input_ids, batch.attention_mask, batch.answer_ids, batch.answer_mask, pad_id=0)
        image = model.pair_features(batch.image_input, batch.input_ids, batch.attention_mask, unimodal=False).image_for_fusion
        decoded = model.decode(image, ids, mask, mode=self.mode, prefix_length=prefix if self.mode == "seq2seq" else None)
        rows, labels = lm_targets(ids, mask, prefix)  # only the answer tokens are projected to the vocabulary
        loss = linear_cross_entropy(*model.lm_projection_inputs(decoded, rows), labels, self.label_smoothing)
        return LossOutput(loss=loss, losses={"vqa_lm_loss": loss.detach()})
