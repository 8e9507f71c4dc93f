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

Several processes (the trainer injects a ``GatherContext``; objectives never import
``torch.distributed``): in-batch ITC gathers features over ranks (``gather_with_grad`` /
``local_loss``, see ``gathered_itc_loss``); momentum ITC uses every rank's momentum features as keys
and enqueues the gathered features, so all ranks hold the same queue (and the same one a single
process with the W-times larger batch would hold); ITM mines hard negatives from the gathered batch
(every rank draws the same global negatives from the same generator and keeps its own rows), with
the fusion inputs gathered with gradient when ``gather_with_grad``. The momentum copy stays identical
on all ranks because it is an EMA of identical (DDP-synchronised) weights.

Gradient accumulation (``vlp.tasks.accumulation``): ``forward(batch, features_only=True)`` is pass
1, ``forward(batch, plan=plan.at(j))`` pass 2. What is exact against one batch of k*B:
in-batch ITC (whole-step loss, cached slots), momentum/queue ITC (keys = all micro-batches' momentum
features), MLM/LM (each micro-batch weighted by its share of the step's predicted tokens, so the
sum is the big batch's token mean; under several ranks the token mean is per rank, as in plain DDP).
What is not: ITM hard negatives are mined *within each micro-batch* (gathered over ranks), not from
all k micro-batches -- the fusion inputs of other micro-batches are not cached, and recomputing them
would cost the memory accumulation is meant to save; ITM is then the 1/k-weighted mean of k
micro-batch ITM losses (each exact given its negatives). PrefixLM and a ``mix="random"`` objective
draw are per step (the same objective for every micro-batch); PrefixLM is weighted 1/k.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from vlp.data.batch import Batch
from vlp.encoders import EncoderOutput
from vlp.models import ImageTextModel
from vlp.models.momentum import ema_update, make_momentum_copy
from vlp.objectives import (
    FeatureQueue,
    alpha_ramp,
    build_itm_pairs,
    distillation_loss,
    gathered_itc_loss,
    itc_loss,
    itc_loss_with_queue,
    itm_loss,
    labelled_positions,
    linear_cross_entropy,
    lm_targets,
    pick_objective,
    sample_hard_negatives,
    sample_prefix_split,
    token_prediction_loss,
)
from vlp.objectives.gather import GatherContext
from vlp.tasks.accumulation import AccumulationPlan, MicroFeatures, cached_itc_loss
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
    # several ranks: differentiable gathers give the exact single-process gradient (see
    # gathered_itc_loss); local_loss computes only this rank's ITC rows (O(B*N) memory, not O(N^2))
    gather_with_grad: bool = True
    local_loss: bool = False

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
    supports_accumulation = True  # forward(batch, features_only=True) / forward(batch, plan=...)

    def __init__(self, model: ImageTextModel, cfg: ObjectivesConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or ObjectivesConfig()
        check_model_supports(model, self.cfg)
        self.model = model
        self.momentum_model: ImageTextModel | None = make_momentum_copy(model) if self.cfg.needs_momentum else None  # type: ignore[assignment]
        self.queue = FeatureQueue(self.cfg.queue_size, model.cfg.embed_dim) if self.cfg.queue_size > 0 else None
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self._pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.dist = GatherContext()

    def set_distributed(self, dist: GatherContext) -> None:
        """Called by the trainer; a plain attribute, so it never enters the state dict."""
        self.dist = dist

    def uses_all_parameters(self) -> bool:
        """False when a step may leave trainable parameters without gradient (a head or fusion
        whose objective is off, one objective per step); DDP must then search for unused ones."""
        if self.cfg.mix != "sum":
            return False
        model, active = self.model, set(self.cfg.active())
        parts = {
            "itc": (model.cfg.contrastive, {"itc"}),
            "itm": (model.itm_head is not None, {"itm"}),
            "mlm": (model.mlm_head is not None, {"mlm", "seq2seq_mlm"}),
            "lm": (model.lm_head is not None, {"lm", "prefix_lm"}),
            "fusion": (getattr(model, "fusion", None) is not None, {"itm", "mlm", "seq2seq_mlm"}),
            "decoder": (getattr(model, "decoder", None) is not None, {"lm", "prefix_lm"}),
        }
        return all(active & users for present, users in parts.values() if present)

    def _generator(self, micro_batch: int = 0) -> torch.Generator:
        return torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + int(self.step) + micro_batch * 1_000_000_007)

    def _active(self, generator: torch.Generator) -> dict[str, float]:
        active = self.cfg.active()
        if self.cfg.mix == "random":
            names = list(active)
            total = sum(active.values())
            chosen = pick_objective(names, [active[n] / total for n in names], generator)
            active = {chosen: 1.0}
        return active

    # ------------------------------------------------------------------ forward
    def forward(self, batch: Batch, plan: AccumulationPlan | None = None, features_only: bool = False) -> LossOutput | MicroFeatures:  # type: ignore[override]
        """The weighted loss of ``batch``; with ``plan``, pass 2 of accumulation; with
        ``features_only``, pass 1 (no gradient, returns ``MicroFeatures``). Both go through
        ``__call__`` so DDP / FSDP hooks run."""
        if features_only:
            with torch.no_grad():
                return self._micro_features(batch)
        cfg, model = self.cfg, self.model
        generator = self._generator()
        active = self._active(generator)
        if plan is not None and plan.index > 0:  # other draws (negatives, prefix split) differ per micro-batch
            generator = self._generator(plan.index)
        image = batch.image_input
        ids, mask, image_ids = batch.input_ids, batch.attention_mask, batch.image_ids
        need_unimodal = "itc" in active or ("itm" in active and model.cfg.contrastive)
        feats = model.pair_features(image, ids, mask, unimodal=need_unimodal)
        losses: dict[str, torch.Tensor] = {}
        image_embeds = text_embeds = None
        if need_unimodal:
            image_embeds, text_embeds = model.project_image(feats.image), model.project_text(feats.text)
        alpha = alpha_ramp(int(self.step), cfg.distill_ramp_steps, cfg.distill_alpha) if cfg.distill_alpha > 0 else 0.0
        shares = {name: (plan.share(name) if plan is not None else 1.0) for name in active}
        backward_weights = dict(shares)
        if "itc" in active:
            assert image_embeds is not None and text_embeds is not None
            if plan is not None and self.momentum_model is None:  # whole-step loss, gradient via the fresh slot
                losses["itc_loss"] = cached_itc_loss(image_embeds, text_embeds, model.logit_scale(), plan, self.dist, cfg.gather_with_grad)
                backward_weights["itc"] = 1.0
            else:
                losses["itc_loss"] = self._itc(batch, image, image_embeds, text_embeds, alpha, plan)
        if "itm" in active:
            losses["itm_loss"] = self._itm(feats.image_for_fusion, feats.text_for_fusion, image_embeds, text_embeds, image_ids, generator)
        if "mlm" in active or "seq2seq_mlm" in active:
            if batch.mlm_input_ids is None or batch.mlm_labels is None:
                raise ValueError("MLM objectives need batches with mlm_input_ids/mlm_labels (set the collator's mlm_rate)")
            for name, mode in (("mlm", "bidirectional"), ("seq2seq_mlm", "seq2seq")):
                if name in active:
                    losses[f"{name}_loss"] = self._mlm(feats.image_for_fusion, image, batch, mode, alpha)
        # LM / PrefixLM / MLM project only the positions that have a target to the vocabulary
        # (lm_targets / labelled_positions), fused with the softmax (linear_cross_entropy): the
        # same loss, without the ignored rows or an [n, V] logits tensor.
        if "lm" in active:
            decoded = model.decode(feats.image_for_fusion, ids, mask, mode="causal")
            rows, labels = lm_targets(ids, mask)
            losses["lm_loss"] = linear_cross_entropy(*model.lm_projection_inputs(decoded, rows), labels, cfg.label_smoothing)
        if "prefix_lm" in active:
            split = sample_prefix_split(mask.cpu(), generator).to(ids.device)
            decoded = model.decode(feats.image_for_fusion, ids, mask, mode="seq2seq", prefix_length=split)
            rows, labels = lm_targets(ids, mask, split)
            losses["prefix_lm_loss"] = linear_cross_entropy(*model.lm_projection_inputs(decoded, rows), labels, cfg.label_smoothing)
        total = sum(active[name.removesuffix("_loss")] * backward_weights[name.removesuffix("_loss")] * value for name, value in losses.items())
        assert isinstance(total, torch.Tensor)
        reported = {k: v.detach() * shares[k.removesuffix("_loss")] for k, v in losses.items()}
        value = None
        if plan is not None:  # this micro-batch's part of the step loss (the backward objective differs)
            value = sum(active[name.removesuffix("_loss")] * v for name, v in reported.items())
        return LossOutput(loss=total, losses=reported, value=value)  # type: ignore[arg-type]

    def _micro_features(self, batch: Batch) -> MicroFeatures:
        """Pass 1 of accumulation: cached ITC embeddings, momentum features, token counts."""
        model = self.model
        out = MicroFeatures(image_ids=batch.image_ids)
        if "itc" in self._active(self._generator()):  # the step's objective draw, as in pass 2
            if self.momentum_model is None:
                out.image_embeds = model.encode_image(batch.image_input)
                out.text_embeds = model.encode_text(batch.input_ids, batch.attention_mask)
            else:
                out.momentum_image, out.momentum_text = self._momentum_features(batch)
                if self.training:
                    self._pending.append((self.dist.gather(out.momentum_image), self.dist.gather(out.momentum_text), self.dist.gather(batch.image_ids)))
        if batch.mlm_labels is not None:
            predicted = int((batch.mlm_labels != -100).sum())
            out.tokens.update(mlm=predicted, seq2seq_mlm=predicted)
        out.tokens["lm"] = int(batch.attention_mask[:, 1:].sum())
        return out

    def _momentum_features(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.momentum_model is not None
        with torch.no_grad():
            m_image = self.momentum_model.encode_image(batch.image_input)
            m_text = self.momentum_model.encode_text(batch.input_ids, batch.attention_mask)
        return m_image, m_text

    def _itc(self, batch: Batch, image, image_embeds: torch.Tensor, text_embeds: torch.Tensor, alpha: float, plan: AccumulationPlan | None = None) -> torch.Tensor:
        scale, dist, cfg = self.model.logit_scale(), self.dist, self.cfg
        if self.momentum_model is None:
            if dist.world_size == 1:
                return itc_loss(image_embeds, text_embeds, scale, batch.image_ids)
            fn = dist.all_gather_with_grad if cfg.gather_with_grad else dist.all_gather
            assert fn is not None
            return gathered_itc_loss(
                image_embeds, text_embeds, scale, batch.image_ids, rank=dist.rank, world_size=dist.world_size,
                all_gather_fn=fn, local_loss=cfg.local_loss, gather_with_grad=cfg.gather_with_grad,
            )
        # Keys: this batch's momentum features first, then every other row of the step (other ranks,
        # other micro-batches) as a queue prefix, then the queue. Column order does not change the
        # loss, so this equals one process holding the whole step (ids make same-image rows positives).
        local = batch.image_ids.shape[0]
        if plan is None:
            m_image, m_text = self._momentum_features(batch)
            all_image, all_text, all_ids = dist.gather(m_image), dist.gather(m_text), dist.gather(batch.image_ids)
            own = slice(dist.rank * local, (dist.rank + 1) * local)
            if self.training:
                self._pending.append((all_image, all_text, all_ids))
        else:
            assert plan.momentum_image is not None and plan.momentum_text is not None
            all_image, all_text, all_ids = plan.momentum_image, plan.momentum_text, plan.image_ids
            start = plan.block().start + dist.rank * local
            own = slice(start, start + local)
            m_image, m_text = all_image[own], all_text[own]

        def others(t: torch.Tensor) -> torch.Tensor:
            return torch.cat([t[: own.start], t[own.stop :]])

        prefix_image, prefix_text, prefix_ids = others(all_image), others(all_text), others(all_ids)
        if self.queue is not None:
            q = self.queue
            prefix_image = torch.cat([prefix_image, q.image_queue.to(prefix_image)])
            prefix_text = torch.cat([prefix_text, q.text_queue.to(prefix_text)])
            prefix_ids = torch.cat([prefix_ids, q.id_queue.to(prefix_ids)])
        return itc_loss_with_queue(
            image_embeds, text_embeds, scale, prefix_image, prefix_text, batch.image_ids, prefix_ids,
            m_image, m_text, alpha=alpha,
        )

    def _gather_encoder_output(self, out: EncoderOutput) -> EncoderOutput:
        """Every rank's fusion inputs, padded to the longest sequence (batches pad per rank)."""
        dist = self.dist
        if dist.world_size == 1:
            return out
        tokens, mask = out.tokens, out.mask
        length = torch.tensor([tokens.shape[1]], device=tokens.device)
        longest = int(dist.gather(length).max())
        if longest > tokens.shape[1]:
            if mask is None:
                mask = torch.ones(tokens.shape[:2], dtype=torch.long, device=tokens.device)
            extra = longest - tokens.shape[1]
            tokens, mask = F.pad(tokens, (0, 0, 0, extra)), F.pad(mask, (0, extra))
        with_grad = self.cfg.gather_with_grad
        return EncoderOutput(
            tokens=dist.gather(tokens, with_grad=with_grad),
            pooled=None if out.pooled is None else dist.gather(out.pooled, with_grad=with_grad),
            mask=None if mask is None else dist.gather(mask),
        )

    def _itm(self, image_in: EncoderOutput, text_in: EncoderOutput, image_embeds, text_embeds, image_ids: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """ITM over this rank's rows; negatives are mined from the batch gathered over all ranks
        (the same draw on every rank: same generator, same global similarities)."""
        model, dist = self.model, self.dist
        local = image_ids.shape[0]
        all_ids = dist.gather(image_ids)
        if image_embeds is not None and text_embeds is not None:
            with torch.no_grad():
                sim = dist.gather(image_embeds.detach()) @ dist.gather(text_embeds.detach()).t()
        else:  # no ITC space (ViLT, UNITER): uniform negatives
            sim = torch.zeros(all_ids.shape[0], all_ids.shape[0], device=image_ids.device)
        negatives = sample_hard_negatives(sim, sim.t(), all_ids, generator)
        image_index, text_index, labels = build_itm_pairs(*negatives)
        rows = torch.arange(local, device=image_index.device) + dist.rank * local
        n = all_ids.shape[0]
        take = torch.cat([rows, rows + n, rows + 2 * n])  # this rank's positives and both negatives
        image_all, text_all = self._gather_encoder_output(image_in), self._gather_encoder_output(text_in)
        fused = model.fuse(image_all.select(image_index[take]), text_all.select(text_index[take]), mode="bidirectional")
        return itm_loss(model.itm_logits(fused), labels[take])

    def _mlm(self, image_in: EncoderOutput, image, batch: Batch, mode: str, alpha: float) -> torch.Tensor:
        model = self.model
        assert batch.mlm_input_ids is not None and batch.mlm_labels is not None
        text_in = model.text_for_fusion(batch.mlm_input_ids, batch.attention_mask)
        fused = model.fuse(image_in, text_in, mode=mode)
        rows, labels = labelled_positions(batch.mlm_labels)  # ~15% of the positions: only those are projected
        if self.momentum_model is None or alpha <= 0:
            return linear_cross_entropy(*model.mlm_projection_inputs(fused, rows), labels)
        logits = model.mlm_logits(fused, rows)  # distillation reads the student's full distribution
        teacher = self.momentum_model
        with torch.no_grad():
            t_feats = teacher.pair_features(image, batch.mlm_input_ids, batch.attention_mask, unimodal=False)
            t_text = teacher.text_for_fusion(batch.mlm_input_ids, batch.attention_mask)
            t_logits = teacher.mlm_logits(teacher.fuse(t_feats.image_for_fusion, t_text, mode=mode), rows)
        # every selected row counts; the all-True mask keeps an empty selection at 0 instead of NaN
        distill = distillation_loss(logits, t_logits, mask=torch.ones_like(labels, dtype=torch.bool))
        return (1 - alpha) * token_prediction_loss(logits, labels) + alpha * distill

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
            for m_image, m_text, ids in self._pending:  # already gathered over ranks
                self.queue.enqueue(m_image, m_text, ids)
        self._pending.clear()


__all__ = ["OBJECTIVES", "ObjectivesConfig", "PretrainTask"]
