"""Contrastive pre-training task (CLIP): ITC over the dual encoder's embeddings."""

from __future__ import annotations

from vlp.data.batch import Batch
from vlp.models import ImageTextModel
from vlp.objectives import ITCLoss
from vlp.tasks.base import LossOutput, Task


class ContrastivePretrainTask(Task):
    def __init__(self, model: ImageTextModel, itc_weight: float = 1.0) -> None:
        super().__init__()
        self.model = model
        self.itc = ITCLoss()
        self.itc_weight = itc_weight

    def forward(self, batch: Batch) -> LossOutput:
        out = self.model(batch.pixels, batch.input_ids, batch.attention_mask)
        assert out.image_embeds is not None and out.text_embeds is not None and out.logit_scale is not None
        itc = self.itc_weight * self.itc(out.image_embeds, out.text_embeds, out.logit_scale, batch.image_ids)
        return LossOutput(loss=itc, losses={"itc_loss": itc.detach()})
