"""Input lanes for the trainer and evaluator: open the data layer's stream for this process,
turn its host batches into global sharded arrays, and save/restore lane states per process."""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import jax
from jax.experimental import multihost_utils
import numpy as np

from melodi_jax.train.errors import UserError

# A batch: inputs int32[B, T], targets int32[B, T], loss_weights float32[B, T],
# doc_start bool[B, N], bytes float32[B] (B lanes of this process, N = T / W windows).
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
                vocab_size: int | None = None):
  """This process's share of the lanes (`melodi_jax.data.make_lanes` unless a factory is given).
  Raises UserError when the lanes do not fit the model (window, vocabulary, batch)."""
  if spec.segment_length % spec.window_length:
    raise UserError(f'segment_length={spec.segment_length} is not a multiple of the model window '
                    f'{spec.window_length}; set TrainConfig.segment_length to a multiple of it')
  processes = jax.process_count()
  if spec.batch_size % processes:
    raise UserError(f'batch size {spec.batch_size} does not split over {processes} processes')
  if factory is None:
    from melodi_jax import data  # pylint: disable=g-import-not-at-top
    factory = data.make_lanes
  stream = factory(spec.data_task, spec.split, text_dir=spec.text_dir,
                   batch_size=spec.batch_size // processes, segment_length=spec.segment_length,
                   window_length=spec.window_length, train=spec.train, seed=spec.seed,
                   shard_index=jax.process_index(), num_shards=processes,
                   tfds_data_dir=spec.tfds_data_dir)
  data_vocab = getattr(stream, 'vocab_size', None)
  if vocab_size is not None and data_vocab is not None and data_vocab > vocab_size:
    raise UserError(f'task {spec.data_task!r} has {data_vocab} token ids but the model has '
                    f'ModelConfig.vocab_size={vocab_size}; make them match')
  return stream


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


def gather_lane_states(state: dict) -> list[dict]:
  """Every process's lane state, in process order (the same list on every process)."""
  if jax.process_count() == 1:
    return [state]
  blob = np.frombuffer(json.dumps(state).encode(), dtype=np.uint8)
  lengths = multihost_utils.process_allgather(np.asarray(len(blob), np.int64))
  padded = np.zeros(int(np.max(lengths)), np.uint8)
  padded[:len(blob)] = blob
  blobs = multihost_utils.process_allgather(padded)
  return [json.loads(bytes(blobs[i, :int(lengths[i])]).decode()) for i in range(len(lengths))]


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
