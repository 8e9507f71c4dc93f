"""Tasks: a model plus objectives, defining the batch contract and the loss mix."""

from vlp.tasks.base import LossOutput, Task
from vlp.tasks.pretrain import OBJECTIVES, ContrastivePretrainTask, ObjectivesConfig, PretrainTask

__all__ = ["OBJECTIVES", "ContrastivePretrainTask", "LossOutput", "ObjectivesConfig", "PretrainTask", "Task"]
