"""Evaluation of a run's labels (many-shot in-context accuracy) and its HTML report.

`icl` needs only numpy; `plots` and `report` need matplotlib (the `eval` extra).
"""

from .icl import METHODS, EvalConfig, evaluate
from .stats import auc, bootstrap_interval, split_groups

__all__ = ["METHODS", "EvalConfig", "auc", "bootstrap_interval", "evaluate", "split_groups"]
