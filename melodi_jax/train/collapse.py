"""Collapse detection, beside the trainer's non-finite stop: a model whose output became uniform
(loss = ln V) with a zero gradient learns nothing more, yet trains and checkpoints as if all were
well. A huge learning rate does it within a few steps (Adafactor at 1e3 on the tiny test model:
loss ln 256 and gradient norm 0.0 from step 7).

The trainer feeds every step's loss and gradient norm to `CollapseWatch`; after `patience`
consecutive collapsed steps it warns once, naming the first collapsed step and the last checkpoint
before it (kept from then on, whatever keep_checkpoints says), and can stop the run. Checkpoints
saved after the collapse carry the record in their `progress` item, so resuming from one warns.
"""
from __future__ import annotations

import dataclasses
import math

from absl import logging

# A collapsed model's float32 loss is ln V to within ~1e-6 (every logit equal); a live model whose
# loss passes ln V on its way down has a gradient norm of order 1 (1.07 at step 1 on the tiny
# test model), far above the zero of a model with nothing left to learn from.
LOSS_TOLERANCE = 1e-3     # nats
GRAD_NORM_TOLERANCE = 1e-6


class TrainingCollapsed(RuntimeError):
  """The run collapsed to uniform output and TrainConfig.stop_on_collapse is set."""


@dataclasses.dataclass
class CollapseWatch:
  """Counts consecutive steps at ln V with zero gradient norm.

  `record` (None until a collapse is confirmed or restored from a checkpoint's progress) is
  {'step': first collapsed step, 'last_checkpoint_before': step or None}. Step s's loss is
  computed with the parameters after s - 1 updates, so those parameters are already collapsed and
  the last checkpoint before the collapse is the latest one saved at a step below s - 1.
  """
  vocab_size: int
  patience: int                      # consecutive collapsed steps that confirm it; 0: off
  record: dict | None = None
  _first_step: int | None = None
  _count: int = 0

  def observe(self, step: int, loss: float, grad_norm: float, checkpointer) -> bool:
    """Returns True on the step a collapse is confirmed (once per run), after logging the
    warning and marking the last checkpoint before it to be kept."""
    if not self.patience or self.record is not None:
      return False
    if not (abs(loss - math.log(self.vocab_size)) <= LOSS_TOLERANCE
            and grad_norm <= GRAD_NORM_TOLERANCE):
      self._first_step, self._count = None, 0
      return False
    if self._first_step is None:
      self._first_step = step
    self._count += 1
    if self._count < self.patience:
      return False
    before = max((s for s in checkpointer.steps if s < self._first_step - 1), default=None)
    self.record = {'step': self._first_step, 'last_checkpoint_before': before}
    if before is not None:
      checkpointer.keep(before)
    logging.warning(
        'training collapsed to uniform output at step %d: loss = ln %d = %.4f with gradient norm '
        '0 for %d steps, nothing is being learned; %s; lower OptimizerConfig.peak_learning_rate '
        '(or set clip_grad_norm) and retrain', self._first_step, self.vocab_size,
        math.log(self.vocab_size), self._count, self._where(checkpointer.directory))
    return True

  def resume(self, progress: dict, step: int, checkpointer):
    """Takes the record of a checkpoint saved after a collapse, warning that it was."""
    self.record = progress.get('collapse')
    if not self.record:
      return
    if self.record.get('last_checkpoint_before') is not None:
      checkpointer.keep(self.record['last_checkpoint_before'])
    logging.warning('resuming from step %d, saved after training collapsed to uniform output '
                    '(loss = ln %d, gradient norm 0) at step %d; %s; this run will not learn from '
                    'here: retrain with a lower OptimizerConfig.peak_learning_rate', step,
                    self.vocab_size, self.record['step'], self._where(checkpointer.directory))

  def stopped(self, step: int, checkpoint_dir: str) -> TrainingCollapsed:
    """The exception that ends a run with TrainConfig.stop_on_collapse."""
    return TrainingCollapsed(
        f'training collapsed to uniform output at step {self.record["step"]}; stopped after step '
        f'{step} (TrainConfig.stop_on_collapse), saved as a marked checkpoint; '
        f'{self._where(checkpoint_dir)}; lower OptimizerConfig.peak_learning_rate and retrain')

  def _where(self, checkpoint_dir: str) -> str:
    before = self.record.get('last_checkpoint_before')
    if before is None:
      return 'no checkpoint was saved before it'
    return f'the last checkpoint before it is step {before} in {checkpoint_dir}'
