"""PretrainTask: a model plus a weighted mix of the lecture's objectives.

ITC (in-batch or momentum queue, optional ALBEF distillation), ITM with ITC-mined hard negatives,
MLM (bidirectional) and seq2seq MLM (VLP), LM and PrefixLM (SimVLM). Either the weighted sum of
all active objectives per step, or (UFO) one objective drawn per step with probabilities
proportional to the weights.

State changes -- the EMA update of the momentum model and the queue enqueue -- happen in
`after_step()`, after the optimiser step: never inside `forward`, so gradient accumulation (several
forwards per step) and evaluation cannot disturb them. Randomness (hard negatives, prefix split,
objective draw) comes from one generator seeded by (seed, step), and `step` is a buffer, so a
resumed run draws exactly what the uninterrupted one drew.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from vlp.data.batch import Batch
from vlp.encoders import EncoderOutput
from vlp.models import ImageTextModel
from vlp.models.momentum import ema_update, make_momentum_copy
from vlp.objectives import (
    FeatureQueue,
    alpha_ramp,
    build_itm_pairs,
    distillation_loss,
    itc_loss,
    itc_loss_with_queue,
    itm_loss,
    lm_loss,
    pick_objective,
    prefix_lm_loss,
    sample_hard_negatives,
    sample_prefix_split,
    token_prediction_loss,
)
from vlp.tasks.base import LossOutput, Task

OBJECTIVES = ("itc", "itm", "mlm", "seq2seq_mlm", "lm", "prefix_lm")


@dataclass
class ObjectivesConfig:
    """Loss weights (0 = off) and the knobs of each objective."""

    itc: float = 1.0
    itm: float = 0.0
    mlm: float = 0.0
    seq2seq_mlm: float = 0.0
    lm: float = 0.0
    prefix_lm: float = 0.0
    mix: Literal["sum", "random"] = "sum"  # "random": UFO's one objective per step, p ~ weight
    queue_size: int = 0  # > 0: MoCo/ALBEF momentum queue of negatives for ITC
    momentum: float = 0.995  # EMA decay of the momentum model (queue / distillation)
    distill_alpha: float = 0.0  # > 0: ALBEF momentum distillation for ITC and MLM
    distill_ramp_steps: int = 1000  # alpha ramps linearly from 0 over these steps (ALBEF: 1 epoch)
    mlm_rate: float = 0.15
    whole_word_mask: bool = False
    label_smoothing: float = 0.0  # for LM / PrefixLM (CoCa uses 0.1)
    seed: int = 0

    def __post_init__(self) -> None:
        weights = [getattr(self, name) for name in OBJECTIVES]
        if any(w < 0 for w in weights):
            raise ValueError("objective weights must be >= 0")
        if not any(w > 0 for w in weights):
            raise ValueError(f"at least one objective weight must be positive ({', '.join(OBJECTIVES)})")
        if not 0.0 <= self.momentum <= 1.0 or not 0.0 <= self.distill_alpha <= 1.0:
            raise ValueError("momentum and distill_alpha must be in [0, 1]")
        if self.queue_size < 0:
            raise ValueError("queue_size must be >= 0")

    def active(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in OBJECTIVES if getattr(self, name) > 0}

    @property
    def needs_momentum(self) -> bool:
        return self.queue_size > 0 or self.distill_alpha > 0

    @property
    def needs_mlm_masks(self) -> bool:
        return self.mlm > 0 or self.seq2seq_mlm > 0


def check_model_supports(model: ImageTextModel, cfg: ObjectivesConfig) -> None:
    """Fail at construction, naming the missing part, instead of deep inside the first step."""
    needs = {
        "itc": model.cfg.contrastive,
        "itm": model.itm_head is not None,
        "mlm": model.mlm_head is not None,
        "seq2seq_mlm": model.mlm_head is not None,
        "lm": model.lm_head is not None,
        "prefix_lm": model.lm_head is not None,
    }
    part = {"itc": "model.contrastive", "itm": "model.heads.itm", "mlm": "model.heads.mlm", "seq2seq_mlm": "model.heads.mlm", "lm": "model.heads.lm", "prefix_lm": "model.heads.lm"}
    for name in cfg.active():
        if not needs[name]:
            raise ValueError(f"objective {name!r} needs {part[name]}=true (or a fusion/decoder that provides it)")
    if cfg.needs_momentum and not model.cfg.contrastive:
        raise ValueError("queue_size / distill_alpha need a contrastive model")


class PretrainTask(Task):
    def __init__(self, model: ImageTextModel, cfg: ObjectivesConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or ObjectivesConfig()
        check_model_supports(model, self.cfg)
        self.model = model
        self.momentum_model: ImageTextModel | None = make_momentum_copy(model) if self.cfg.needs_momentum else None  # type: ignore[assignment]
        self.queue = FeatureQueue(self.cfg.queue_size, model.cfg.embed_dim) if self.cfg.queue_size > 0 else None
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self._pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def train(self, mode: bool = True) -> PretrainTask:
        super().train(mode)
        if self.momentum_model is not None:
            self.momentum_model.train(mode)
        return self

    def _generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + int(self.step))

    # ------------------------------------------------------------------ forward
    def forward(self, batch: Batch) -> LossOutput:
        cfg, model = self.cfg, self.model
        generator = self._generator()
        active = cfg.active()
        if cfg.mix == "random":
            names = list(active)
            total = sum(active.values())
            chosen = pick_objective(names, [active[n] / total for n in names], generator)
            active = {chosen: 1.0}
        image = batch.image_input
        ids, mask, image_ids = batch.input_ids, batch.attention_mask, batch.image_ids
        need_unimodal = "itc" in active or ("itm" in active and model.cfg.contrastive)
        feats = model.pair_features(image, ids, mask, unimodal=need_unimodal)
        losses: dict[str, torch.Tensor] = {}
        image_embeds = text_embeds = None
        if need_unimodal:
            image_embeds, text_embeds = model.project_image(feats.image), model.project_text(feats.text)
        alpha = alpha_ramp(int(self.step), cfg.distill_ramp_steps, cfg.distill_alpha) if cfg.distill_alpha > 0 else 0.0
        if "itc" in active:
            assert image_embeds is not None and text_embeds is not None
            losses["itc_loss"] = self._itc(batch, image, image_embeds, text_embeds, alpha)
        if "itm" in active:
            losses["itm_loss"] = self._itm(feats.image_for_fusion, feats.text_for_fusion, image_embeds, text_embeds, image_ids, generator)
        if "mlm" in active or "seq2seq_mlm" in active:
            if batch.mlm_input_ids is None or batch.mlm_labels is None:
                raise ValueError("MLM objectives need batches with mlm_input_ids/mlm_labels (set the collator's mlm_rate)")
            for name, mode in (("mlm", "bidirectional"), ("seq2seq_mlm", "seq2seq")):
                if name in active:
                    losses[f"{name}_loss"] = self._mlm(feats.image_for_fusion, image, batch, mode, alpha)
        if "lm" in active:
            decoded = model.decode(feats.image_for_fusion, ids, mask, mode="causal")
            losses["lm_loss"] = lm_loss(model.lm_logits(decoded), ids, mask, cfg.label_smoothing)
        if "prefix_lm" in active:
            split = sample_prefix_split(mask.cpu(), generator).to(ids.device)
            decoded = model.decode(feats.image_for_fusion, ids, mask, mode="seq2seq", prefix_length=split)
            losses["prefix_lm_loss"] = prefix_lm_loss(model.lm_logits(decoded), ids, mask, split, cfg.label_smoothing)
        total = sum(active[name.removesuffix("_loss")] * value for name, value in losses.items())
        assert isinstance(total, torch.Tensor)
        return LossOutput(loss=total, losses={k: v.detach() for k, v in losses.items()})

    def _itc(self, batch: Batch, image, image_embeds: torch.Tensor, text_embeds: torch.Tensor, alpha: float) -> torch.Tensor:
        model, scale = self.model, self.model.logit_scale()
        if self.momentum_model is None:
            return itc_loss(image_embeds, text_embeds, scale, batch.image_ids)
        with torch.no_grad():
            m_image = self.momentum_model.encode_image(image)
            m_text = self.momentum_model.encode_text(batch.input_ids, batch.attention_mask)
        if self.training:
            self._pending.append((m_image, m_text, batch.image_ids))
        if self.queue is not None:
            q = self.queue
            return itc_loss_with_queue(
                image_embeds, text_embeds, scale, q.image_queue, q.text_queue, batch.image_ids, q.id_queue,
                m_image, m_text, alpha=alpha,
            )
        empty = image_embeds.new_zeros(0, image_embeds.shape[1])
        return itc_loss_with_queue(image_embeds, text_embeds, scale, empty, empty, batch.image_ids, None, m_image, m_text, alpha=alpha)

    def _itm(self, image_in: EncoderOutput, text_in: EncoderOutput, image_embeds, text_embeds, image_ids: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        model = self.model
        batch = image_ids.shape[0]
        if image_embeds is not None and text_embeds is not None:
            with torch.no_grad():
                sim = image_embeds @ text_embeds.t()
        else:  # no ITC space (ViLT, UNITER): uniform negatives
            sim = torch.zeros(batch, batch, device=image_ids.device)
        negatives = sample_hard_negatives(sim, sim.t(), image_ids, generator)
        image_index, text_index, labels = build_itm_pairs(*negatives)
        fused = model.fuse(image_in.select(image_index), text_in.select(text_index), mode="bidirectional")
        return itm_loss(model.itm_logits(fused), labels)

    def _mlm(self, image_in: EncoderOutput, image, batch: Batch, mode: str, alpha: float) -> torch.Tensor:
        model = self.model
        assert batch.mlm_input_ids is not None and batch.mlm_labels is not None
        text_in = model.text_for_fusion(batch.mlm_input_ids, batch.attention_mask)
        fused = model.fuse(image_in, text_in, mode=mode)
        logits = model.mlm_logits(fused)
        loss = token_prediction_loss(logits, batch.mlm_labels)
        if self.momentum_model is not None and alpha > 0:
            teacher = self.momentum_model
            with torch.no_grad():
                t_feats = teacher.pair_features(image, batch.mlm_input_ids, batch.attention_mask, unimodal=False)
                t_text = teacher.text_for_fusion(batch.mlm_input_ids, batch.attention_mask)
                t_logits = teacher.mlm_logits(teacher.fuse(t_feats.image_for_fusion, t_text, mode=mode))
            predicted = batch.mlm_labels != -100
            loss = (1 - alpha) * loss + alpha * distillation_loss(logits, t_logits, mask=predicted)
        return loss

    @torch.no_grad()
    def log_values(self) -> dict[str, float]:
        values: dict[str, float] = {}
        if self.model.cfg.contrastive:
            values["logit_scale"] = float(self.model.logit_scale())
        if self.queue is not None:
            values["queue_filled"] = float(self.queue.filled().float().mean())
        return values

    # ------------------------------------------------------------------ state changes
    @torch.no_grad()
    def after_step(self) -> None:
        self.step += 1
        if self.momentum_model is not None:
            ema_update(self.momentum_model, self.model, self.cfg.momentum)
        if self.queue is not None:
            for m_image, m_text, ids in self._pending:
                self.queue.enqueue(m_image, m_text, ids)
        self._pending.clear()


__all__ = ["OBJECTIVES", "ObjectivesConfig", "PretrainTask"]
