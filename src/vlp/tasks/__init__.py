"""Tasks: a model plus objectives, defining the batch contract and the loss mix."""

from vlp.tasks.base import LossOutput, Task
from vlp.tasks.pretrain import ContrastivePretrainTask

__all__ = ["ContrastivePretrainTask", "LossOutput", "Task"]
