"""Tasks as data: a template, the fields it needs, a group field and a consistency rule.

`get_task(name)` returns a registered `Task`; `load_task_spec(path)` reads a custom one from YAML or
JSON; `resolve_task(name_or_path)` does either; `Task.load(path)` reads a data file into a
`Dataset`.
"""

from pathlib import Path

from . import builtin  # noqa: F401 - registers the built-in tasks
from .answers import final_answer
from .base import Dataset, Task, get_task, register, task_names
from .custom import load_task_spec


def resolve_task(name: str) -> Task:
    """A registered task name, or the path of a custom task spec (.yaml, .yml, .json)."""
    if Path(name).suffix in (".yaml", ".yml", ".json"):
        return load_task_spec(name)
    return get_task(name)


__all__ = [
    "Dataset",
    "Task",
    "final_answer",
    "get_task",
    "load_task_spec",
    "register",
    "resolve_task",
    "task_names",
]
