"""Input lanes for the trainer and evaluator: open the data layer's stream, keep this process's
lanes of it, and turn its host batches into global sharded arrays.

Lanes are global: every process reads the same stream of all B lanes (and holds the same lane
state) and keeps the rows its devices hold. So P processes read exactly the lanes one process
reads, and a checkpoint's lane state restores under any number of processes. The price is that
every host fills all B lanes (numpy copies; documents are loaded whole on every host anyway).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from typing import Any

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np

from melodi_jax import data
from melodi_jax.errors import UserError

# A batch: inputs int32[B, T], targets int32[B, T], loss_weights float32[B, T],
# doc_start bool[B, N], bytes float32[B] (B lanes, N = T / W windows): all lanes, or this
# process's rows of them.
Batch = dict[str, np.ndarray]
BATCH_KEYS = ('inputs', 'targets', 'loss_weights', 'doc_start', 'bytes')


@dataclasses.dataclass(frozen=True)
class StreamSpec:
  """Which lanes to read: a task/split (or a folder of text files) at a global batch size."""
  task: str                # '<corpus>_<vocabulary>', e.g. 'books_bytes' (melodi_jax.data.TASKS)
  split: str
  batch_size: int          # global lanes, all processes
  segment_length: int      # T
  window_length: int       # W
  train: bool              # shuffled, endless; False: in order, ends after every document
  seed: int = 0
  text_dir: str | None = None   # read these files (with the task's vocabulary) instead
  tfds_data_dir: str | None = None

  @property
  def data_task(self) -> str:
    """The data layer's task: with a text folder, 'text_dir_<vocabulary of task>'."""
    if self.text_dir:
      return 'text_dir_' + self.task.rpartition('_')[2]
    return self.task

  @property
  def name(self) -> str:
    """The task name in result file names; a text folder is `text_dir_<folder name>`."""
    if self.text_dir:
      return 'text_dir_' + os.path.basename(os.path.normpath(self.text_dir))
    return self.task


StreamFactory = Callable[..., Iterator[Batch]]


def open_stream(spec: StreamSpec, factory: StreamFactory | None = None,
                vocab_size: int | None = None, sharding: jax.sharding.Sharding | None = None):
  """This process's lanes of the stream (`melodi_jax.data.make_lanes` unless a factory is given):
  the rows of the batch that `sharding` puts on this process's devices (default: block
  `process_index` of `process_count` equal blocks). Raises UserError when the lanes do not fit
  the model (window, vocabulary, batch)."""
  if spec.segment_length % spec.window_length:
    raise UserError(f'segment_length={spec.segment_length} is not a multiple of the model window '
                    f'{spec.window_length}; set TrainConfig.segment_length to a multiple of it')
  processes = jax.process_count()
  if spec.batch_size % processes:
    raise UserError(f'batch size {spec.batch_size} does not split over {processes} processes')
  if factory is None:
    factory = data.make_lanes
  # One data shard of all the lanes, whatever the process count (see the module docstring).
  stream = factory(spec.data_task, spec.split, text_dir=spec.text_dir,
                   batch_size=spec.batch_size, segment_length=spec.segment_length,
                   window_length=spec.window_length, train=spec.train, seed=spec.seed,
                   shard_index=0, num_shards=1, tfds_data_dir=spec.tfds_data_dir)
  data_vocab = getattr(stream, 'vocab_size', None)
  if vocab_size is not None and data_vocab is not None and data_vocab > vocab_size:
    raise UserError(f'task {spec.data_task!r} has {data_vocab} token ids but the model has '
                    f'ModelConfig.vocab_size={vocab_size}; make them match')
  if processes == 1:
    return stream
  if sharding is not None:
    rows = process_rows(sharding, spec.batch_size)
  else:
    lanes = spec.batch_size // processes
    rows = np.arange(jax.process_index() * lanes, (jax.process_index() + 1) * lanes)
  logging.info('process %d/%d reads lanes %s of %d (%s/%s)', jax.process_index(), processes,
               _describe(rows), spec.batch_size, spec.name, spec.split)
  return ProcessLanes(stream, rows)


def process_rows(sharding: jax.sharding.Sharding, batch_size: int) -> np.ndarray:
  """int64[lanes]: the global lanes (batch rows) on this process's devices, in increasing order:
  the process-local data `jax.make_array_from_process_local_data` expects."""
  rows = set()
  for index in sharding.addressable_devices_indices_map((batch_size,)).values():
    rows.update(range(batch_size)[index[0]])
  return np.array(sorted(rows), np.int64)


def _describe(rows: np.ndarray) -> str:
  if len(rows) and np.array_equal(rows, np.arange(rows[0], rows[-1] + 1)):
    return f'[{rows[0]}, {rows[-1] + 1})'
  return str(rows.tolist())


class ProcessLanes:
  """Rows `rows` of every batch of a stream of all lanes; `state()`/`restore()` are the whole
  stream's (the same on every process). Other attributes (vocab_size, token_bytes, ...) are the
  stream's."""

  def __init__(self, stream, rows: np.ndarray):
    self.stream = stream
    self.rows = np.asarray(rows, np.int64)
    contiguous = len(self.rows) and np.array_equal(
        self.rows, np.arange(self.rows[0], self.rows[-1] + 1))
    self._index = slice(int(self.rows[0]), int(self.rows[-1]) + 1) if contiguous else self.rows

  def __iter__(self):
    return self

  def __next__(self) -> Batch:
    batch = next(self.stream)
    return {key: value[self._index] for key, value in batch.items()}

  def state(self) -> dict:
    return self.stream.state()

  def restore(self, state: dict):
    self.stream.restore(state)

  def __getattr__(self, name):
    if name == 'stream':  # not set yet (copy, pickle): no recursion
      raise AttributeError(name)
    return getattr(self.stream, name)


def restore_stream(stream, lane_state: dict):
  """Puts a stream back where `stream.state()` was taken."""
  stream.restore(lane_state)


def global_batch(batch: Batch, sharding: jax.sharding.Sharding) -> dict[str, jax.Array]:
  """Host batch of this process's lanes -> global arrays with lanes sharded on 'data'."""
  return {key: jax.make_array_from_process_local_data(sharding, np.asarray(batch[key]))
          for key in BATCH_KEYS}


def empty_batch(spec: StreamSpec) -> Batch:
  """This process's share of a batch that changes no sum: zero loss weights and bytes (fed by a
  process whose eval lanes ended while other processes still read theirs)."""
  lanes = spec.batch_size // jax.process_count()
  windows = spec.segment_length // spec.window_length
  return {'inputs': np.zeros((lanes, spec.segment_length), np.int32),
          'targets': np.zeros((lanes, spec.segment_length), np.int32),
          'loss_weights': np.zeros((lanes, spec.segment_length), np.float32),
          'doc_start': np.zeros((lanes, windows), bool),
          'bytes': np.zeros((lanes,), np.float32)}


def agreed_lane_state(state: dict) -> dict:
  """`state` after checking that every process holds the same one (lanes are global, so a
  difference means the processes read different data: a bug, never a user error)."""
  if jax.process_count() == 1:
    return state
  digest = np.frombuffer(hashlib.sha256(json.dumps(state, sort_keys=True).encode()).digest()[:8],
                         np.int64)
  digests = np.asarray(multihost_utils.process_allgather(digest)).reshape(-1)
  assert np.all(digests == digests[0]), (
      f'process {jax.process_index()}: the processes hold different lane states {digests}')
  return state


def all_processes_done(done: bool) -> bool:
  if jax.process_count() == 1:
    return done
  return bool(np.all(multihost_utils.process_allgather(np.asarray(done))))


def next_batch(stream) -> tuple[Batch | None, Any]:
  """(batch, lane state after it); (None, state) when an eval stream has read every document."""
  try:
    batch = next(stream)
  except StopIteration:
    return None, stream.state()
  return batch, stream.state()
