"""Loss sums, and where metrics go: TensorBoard event files (clu's SummaryWriter),
`train_metrics.jsonl` (writers.py) and one progress line per log interval."""
from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Mapping
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import optax

LN2 = math.log(2.0)


def loss_sums(logits: jax.Array, targets: jax.Array, loss_weights: jax.Array,
              num_bytes: jax.Array) -> dict[str, jax.Array]:
  """Summed next-token loss of one batch.

  Args: logits float32[B, T, V]; targets int32[B, T]; loss_weights float32[B, T] (0 on padding);
    num_bytes float32[B] (bytes of text the real tokens stand for).
  Returns: float32 scalars `nats` (weighted sum of -log p), `tokens` (sum of weights), `bytes`.
  """
  nats = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)
  return {'nats': jnp.sum(nats * loss_weights), 'tokens': jnp.sum(loss_weights),
          'bytes': jnp.sum(num_bytes)}


def bits_per_byte(nats: float, num_bytes: float) -> float:
  return nats / LN2 / num_bytes if num_bytes else float('nan')


def _clock(seconds: float) -> str:
  if not math.isfinite(seconds):
    return '?'
  seconds = int(seconds)
  return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'


@dataclasses.dataclass
class MetricLogger:
  """Writes training and eval metrics; only process 0 writes files, every process logs."""
  workdir: str
  total_steps: int
  start_step: int = 0
  primary: bool = True

  def __post_init__(self):
    self._start_time = time.time()
    self._last_time, self._last_step = self._start_time, self.start_step
    self._tensorboard = self._jsonl = None
    if self.primary:
      # clu's writers import TensorFlow (seconds): only once a run really starts.
      from melodi_jax.train import writers  # pylint: disable=g-import-not-at-top
      self._tensorboard = writers.tensorboard_writer(self.workdir)
      self._jsonl = writers.JsonlMetricWriter(os.path.join(self.workdir, 'train_metrics.jsonl'))

  def train(self, step: int, scalars: Mapping[str, float], tokens_per_step: int):
    """Logs a training step: scalars must hold `loss` (nats/token) and `bits_per_byte`."""
    now = time.time()
    steps = max(step - self._last_step, 1)
    tokens_per_second = steps * tokens_per_step / max(now - self._last_time, 1e-9)
    self._last_time, self._last_step = now, step
    elapsed = now - self._start_time
    per_step = elapsed / max(step - self.start_step, 1)
    eta = per_step * (self.total_steps - step)
    row = dict(scalars, tokens_per_second=tokens_per_second)
    if self.primary:
      self._jsonl.write_scalars(step, row)
      self._tensorboard.write_scalars(step, {f'train/{k}': v for k, v in row.items()})
    logging.info('step %d/%d  loss %.4f  bits/byte %.4f  tokens/s %s  elapsed %s  ETA %s',
                 step, self.total_steps, scalars['loss'], scalars['bits_per_byte'],
                 f'{tokens_per_second:,.0f}', _clock(elapsed), _clock(eta))

  def eval(self, step: int, name: str, scalars: Mapping[str, float]):
    if self.primary:
      self._tensorboard.write_scalars(step, {f'eval/{name}/{k}': v for k, v in scalars.items()})
    logging.info('eval %s at step %d: %s', name, step,
                 '  '.join(f'{k} {v:.4f}' for k, v in scalars.items()))

  def text(self, step: int, tag: str, text: str):
    if self.primary:
      self._tensorboard.write_texts(step, {tag: text})

  def close(self):
    if self.primary:
      self._tensorboard.close()
      self._jsonl.close()


def finite(value: float) -> bool:
  return bool(np.isfinite(value))
