"""Objectives as tasks for the one step loop (:func:`shared.train.loop.fit`): what to train on and what to minimise.

A task supplies micro-batches (a pure function of the index, the rank and the world size), the loss of one
micro-batch, and a periodic evaluation. Pre-training is :class:`shared.tasks.lm.LMTask`; later weeks add SFT
(masked targets), LoRA (a model whose base is frozen) and DPO (a policy beside a frozen reference model) as tasks,
never as another loop.
"""

from shared.tasks.base import Task
from shared.tasks.lm import LMTask, LMTaskConfig, causal_lm_loss, estimate_loss

__all__ = ["LMTask", "LMTaskConfig", "Task", "causal_lm_loss", "estimate_loss"]
