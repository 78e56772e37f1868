"""icm: Internal Coherence Maximization (Wen et al. 2025), unsupervised elicitation of labels.

import icm
result = icm.label("claims.jsonl", task="truthfulqa")  # what `icm run` does
result.labels, result.verdict, result.to_pandas()

Algorithm 1 step by step:
task = icm.get_task("truthfulqa")
data = task.load("train.json")
model = icm.TransformersModel.load("default", fmt=task.fmt)
search = icm.Search(data.examples, model, task.rule)
state = search.start(seed=0)
for step in search.run(state, iterations=32):
    ...
"""

from .api import Labelling, label
from .core.data import Example, PromptFormat
from .core.model import LabelModel
from .core.search import Search, SearchConfig, State
from .errors import IcmError
from .run.config import RunConfig
from .run.driver import Run
from .tasks import Dataset, Task, get_task, load_task_spec

__version__ = "0.1.0"


def __getattr__(name: str):
    # The transformers backend imports torch: load it only when asked for.
    if name == "TransformersModel":
        from .backends.transformers import TransformersModel

        return TransformersModel
    raise AttributeError(name)


__all__ = [
    "Dataset",
    "Example",
    "IcmError",
    "LabelModel",
    "Labelling",
    "PromptFormat",
    "Run",
    "RunConfig",
    "Search",
    "SearchConfig",
    "State",
    "Task",
    "TransformersModel",
    "get_task",
    "label",
    "load_task_spec",
]
