"""The gin-configurable run configuration: what to train on, for how long, and how often to
log, evaluate and checkpoint. The model (`models.ModelConfig`) and the optimizer
(`optim.OptimizerConfig`) have their own configs."""
from __future__ import annotations

import dataclasses

import gin

from melodi_jax.errors import UserError
from melodi_jax.train import positions


@gin.configurable
@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Run settings; every field is a gin knob (`TrainConfig.num_steps = 1000`)."""
  task: str = 'synthetic_bytes'       # '<corpus>_<vocabulary>' (melodi_jax.data.TASKS)
  train_split: str = 'train'
  eval_split: str = 'validation'      # split evaluated every eval_every steps
  text_dir: str | None = None         # a folder of text files read with task's vocabulary
  num_steps: int = 1000               # total optimizer steps
  batch_size: int = 8                 # global lanes per step, over all processes
  segment_length: int = 512           # T: tokens per lane per step (a multiple of the window)
  seed: int = 0                       # parameters, dropout and lane shuffling
  mesh_shape: tuple[int, int] = (-1, 1)  # (data, model); -1: the devices left over
  axis_rules: tuple | None = None     # logical->mesh rules; None: layers.axes.DEFAULT_RULES
  log_every: int = 50                 # progress line + train_metrics.jsonl + TensorBoard
  checkpoint_every: int = 1000        # also at the end and on SIGTERM/SIGINT
  keep_checkpoints: int = 3           # newest checkpoints kept on disk
  collapse_steps: int = 10            # consecutive steps at loss ln V with zero gradient norm
                                      # reported as a collapse (train/collapse.py); 0: off
  stop_on_collapse: bool = False      # also stop the run there (after saving a marked checkpoint)
  eval_every: int = 0                 # 0: no evaluation during training
  eval_batch_size: int | None = None  # None: batch_size
  eval_max_batches: int | None = None  # None: the whole split (the evaluation protocol)
  # Per-position evaluation: lower edges of the document-position buckets after [0, first):
  # the default gives [0, 256), [256, 1k), [1k, 4k), [4k, 16k), [16k, 64k), >= 64k.
  eval_position_buckets: tuple[int, ...] = positions.DEFAULT_BOUNDARIES

  def validate(self):
    positive = ('num_steps', 'batch_size', 'segment_length', 'log_every', 'checkpoint_every',
                'keep_checkpoints')
    for name in positive:
      if getattr(self, name) <= 0:
        raise UserError(f'TrainConfig.{name}={getattr(self, name)} must be positive; fix it in '
                        'your gin files or --gin_bindings')
    if self.eval_every < 0:
      raise UserError(f'TrainConfig.eval_every={self.eval_every} must be >= 0 (0 disables)')
    if self.collapse_steps < 0:
      raise UserError(f'TrainConfig.collapse_steps={self.collapse_steps} must be >= 0 (0 '
                      'disables collapse detection)')
    positions.check_boundaries(self.eval_position_buckets)
    return self

  @property
  def eval_batch(self) -> int:
    return self.eval_batch_size or self.batch_size
