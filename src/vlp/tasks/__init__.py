"""Tasks: a model plus objectives, defining the batch contract and the loss mix."""

from vlp.tasks.base import LossOutput, Task
from vlp.tasks.pretrain import OBJECTIVES, ObjectivesConfig, PretrainTask

__all__ = ["OBJECTIVES", "LossOutput", "ObjectivesConfig", "PretrainTask", "Task"]
