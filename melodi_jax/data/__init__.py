"""Data layer: offline corpora, vocabularies, in-order document lanes and seqio tasks.

Importing this package is cheap (no TensorFlow, no corpus reads); `tasks` registers seqio tasks.
"""

from melodi_jax.data.lanes import Documents, LaneStream
from melodi_jax.data.pipeline import TASKS, make_lanes, parse_task, task_vocabulary
from melodi_jax.data.vocab import get_vocabulary

__all__ = ["Documents", "LaneStream", "TASKS", "get_vocabulary", "make_lanes", "parse_task",
           "task_vocabulary"]
