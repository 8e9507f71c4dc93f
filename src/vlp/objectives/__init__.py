"""Pre-training objectives: pure functions plus thin parameter-free modules."""

from vlp.objectives.itc import ITCLoss, itc_loss, itc_targets, soft_cross_entropy

__all__ = ["ITCLoss", "itc_loss", "itc_targets", "soft_cross_entropy"]
