"""Tasks: what is specific to one kind of data (image fusion, station time series, ...).

The contract is :class:`stfcat.tasks.base.Task`; ``get_task(name)`` gives the task a model
declares with ``register_model(..., task=name)``. Tasks import the data and model layers, never
the engine at module level (the engine imports tasks).
"""

from __future__ import annotations

from .base import Task, TaskError, get_task, list_tasks, register_task

__all__ = ["Task", "TaskError", "get_task", "list_tasks", "register_task"]
