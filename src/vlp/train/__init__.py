"""Training engine: devices, precision, optimisation, checkpoints, logging."""

from vlp.train.checkpoint import CheckpointError, TrainerState, load_model_weights
from vlp.train.config import TrainConfig
from vlp.train.distributed import DistributedContext, init_distributed
from vlp.train.trainer import NonFiniteLossError, Trainer, TrainingInterrupted, TrainResult, resolve_device, seed_everything

__all__ = [
    "CheckpointError",
    "DistributedContext",
    "NonFiniteLossError",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainerState",
    "TrainingInterrupted",
    "init_distributed",
    "load_model_weights",
    "resolve_device",
    "seed_everything",
]
