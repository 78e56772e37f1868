"""Tasks as data: a template, the fields it needs, a group field and a consistency rule.

`get_task(name)` returns a registered `Task`; `load_task_spec(path)` reads a custom one from YAML or
JSON; `Task.load(path)` reads a data file into a `Dataset`.
"""

from .base import Dataset, Task, get_task, register, task_names
from .builtin import final_answer
from .custom import load_task_spec

__all__ = [
    "Dataset",
    "Task",
    "final_answer",
    "get_task",
    "load_task_spec",
    "register",
    "task_names",
]
