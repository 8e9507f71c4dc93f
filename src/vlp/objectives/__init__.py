"""Pre-training objectives: pure functions plus thin parameter-free modules.

Temperatures and heads live in the model; distribution arrives only as an injected gather function
plus rank / world size; state changes (queue enqueue, EMA) are the task's ``after_step`` business.
"""

from vlp.objectives.distill import DistillationLoss, distillation_loss
from vlp.objectives.gather import AllGatherFn, dist_all_gather, dist_all_gather_with_grad, gather_features, gather_tensor
from vlp.objectives.itc import (
    ITCLoss,
    QueueITCLoss,
    alpha_ramp,
    gathered_itc_loss,
    id_targets,
    itc_loss,
    itc_loss_with_queue,
    itc_soft_targets,
    itc_targets,
    soft_cross_entropy,
)
from vlp.objectives.itm import HardNegatives, ITMLoss, build_itm_pairs, itm_loss, sample_hard_negatives
from vlp.objectives.linear_ce import linear_cross_entropy
from vlp.objectives.lm import LMLoss, lm_labels, lm_loss, lm_targets, prefix_lm_attention_mask, prefix_lm_loss, sample_prefix_split
from vlp.objectives.mix import pick_objective
from vlp.objectives.mlm import TokenPredictionLoss, labelled_positions, seq2seq_attention_mask, token_prediction_loss
from vlp.objectives.queue import FeatureQueue

__all__ = [
    "AllGatherFn",
    "DistillationLoss",
    "FeatureQueue",
    "HardNegatives",
    "ITCLoss",
    "ITMLoss",
    "LMLoss",
    "QueueITCLoss",
    "TokenPredictionLoss",
    "alpha_ramp",
    "build_itm_pairs",
    "dist_all_gather",
    "dist_all_gather_with_grad",
    "distillation_loss",
    "gather_features",
    "gather_tensor",
    "gathered_itc_loss",
    "id_targets",
    "itc_loss",
    "itc_loss_with_queue",
    "itc_soft_targets",
    "itc_targets",
    "itm_loss",
    "labelled_positions",
    "linear_cross_entropy",
    "lm_labels",
    "lm_loss",
    "lm_targets",
    "pick_objective",
    "prefix_lm_attention_mask",
    "prefix_lm_loss",
    "sample_hard_negatives",
    "sample_prefix_split",
    "seq2seq_attention_mask",
    "soft_cross_entropy",
    "token_prediction_loss",
]
