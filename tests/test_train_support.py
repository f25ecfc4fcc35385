"""Helpers for the trainer tests (no tests here): a tiny model and a synthetic lane stream with
the data layer's batch format and state()/restore()."""
import functools
import json
import os
import re
import sys

import numpy as np

from melodi_jax.train import config, optim, trainer
from melodi_jax.errors import UserError  # pylint: disable=unused-import  (for tests)

SEGMENT = 16
WINDOW = 8
MODEL_GIN = ['models/melodi.gin', 'sizes/tiny.gin']
MODEL_BINDINGS = ['ModelConfig.num_layers = 2', 'MelodiStack.long_term_layers = (1,)']


@functools.lru_cache(maxsize=None)
def tiny_model():
  """The tiny MELODI (short- and long-term memory), cut to two layers to compile quickly."""
  from melodi_jax import models
  return models.build(MODEL_GIN, MODEL_BINDINGS)


# No persistent compilation cache here: one on disk shared by the xdist workers and their
# subprocesses crashed a worker in CI (while loading 8-device programs; jax's CPU cache writes
# entries without a lock and deserialising CPU executables is not robust), and it saved little.


def optimizer(**overrides):
  """Fixed decay_steps so that num_steps does not change the compiled program."""
  return optim.OptimizerConfig(warmup_steps=2, decay_steps=100, **overrides)


def train_config(**overrides):
  values = dict(num_steps=3, batch_size=8, segment_length=SEGMENT, log_every=1,
                checkpoint_every=100, mesh_shape=(1, 1))
  values.update(overrides)
  return config.TrainConfig(**values)


def run_training(workdir, model=None, stream_factory='synthetic', **overrides):
  """Trains in-process (on SyntheticLanes unless `stream_factory` is None: the data layer);
  returns {step: loss} read from train_metrics.jsonl."""
  if stream_factory == 'synthetic':
    stream_factory = synthetic_factory
  trainer.train(train_config(**overrides), str(workdir), model=model or tiny_model(),
                stream_factory=stream_factory, optimizer_config=optimizer())
  return read_losses(workdir)


def read_losses(workdir):
  losses = {}
  with open(os.path.join(workdir, 'train_metrics.jsonl')) as f:
    for line in f:
      row = json.loads(line)
      losses[row['step']] = row['loss']
  return losses


class SyntheticLanes:
  """B lanes of pseudo-random documents (lengths 5..60 tokens) in the data layer's format.

  Lane b of shard s reads documents b, b + B, ... of an endless (train) or finite (eval,
  `num_documents`) list; a document ends padded to the window, the next starts at the next
  window with doc_start set. The state is the position of each lane.
  """

  def __init__(self, *, batch_size, segment_length, window_length, train, seed=0,
               shard_index=0, num_shards=1, num_documents=12, **unused):
    del unused
    self.b, self.t, self.w, self.train = batch_size, segment_length, window_length, train
    self.seed, self.num_documents = seed + 1000 * shard_index, num_documents
    self.lanes = [[lane, 0] for lane in range(batch_size)]  # [document, offset]

  def document(self, index):
    rng = np.random.RandomState([self.seed, index])
    return rng.randint(1, 256, rng.randint(5, 60)).astype(np.int32)

  def state(self):
    return {'lanes': [list(lane) for lane in self.lanes]}

  def restore(self, state):
    self.lanes = [list(lane) for lane in state['lanes']]

  def __iter__(self):
    return self

  def __next__(self):
    if not self.train and all(d >= self.num_documents for d, _ in self.lanes):
      raise StopIteration
    batch = {'inputs': np.zeros((self.b, self.t), np.int32),
             'targets': np.zeros((self.b, self.t), np.int32),
             'loss_weights': np.zeros((self.b, self.t), np.float32),
             'doc_start': np.zeros((self.b, self.t // self.w), bool),
             'bytes': np.zeros((self.b,), np.float32)}
    for lane, (doc, offset) in enumerate(self.lanes):
      position = 0
      while position < self.t and (self.train or doc < self.num_documents):
        tokens = self.document(doc)
        if offset == 0:
          batch['doc_start'][lane, position // self.w] = True
        count = min(len(tokens) - offset, self.t - position)
        batch['inputs'][lane, position:position + count] = tokens[offset:offset + count]
        with_next = min(count, len(tokens) - offset - 1)
        batch['targets'][lane, position:position + with_next] = tokens[offset + 1:
                                                                       offset + 1 + with_next]
        batch['loss_weights'][lane, position:position + with_next] = 1
        position += count
        offset += count
        if offset == len(tokens):
          doc, offset = doc + self.b, 0
          position = -(-position // self.w) * self.w
      self.lanes[lane] = [doc, offset]
    batch['bytes'] = batch['loss_weights'].sum(axis=1)
    return batch


def synthetic_factory(task, split, **kwargs):
  del task, split
  return SyntheticLanes(**kwargs)


def cli_command(module, workdir, *flags):
  """`python -m melodi_jax.<module>` on the tiny model, one device, synthetic bytes."""
  bindings = MODEL_BINDINGS + [
      f'TrainConfig.segment_length = {SEGMENT}', 'TrainConfig.batch_size = 8',
      'TrainConfig.mesh_shape = (1, 1)', 'TrainConfig.log_every = 1',
      'TrainConfig.eval_every = 0', 'TrainConfig.checkpoint_every = 1000',
      'OptimizerConfig.warmup_steps = 2', 'OptimizerConfig.decay_steps = 100']
  gin_flags = [f'--gin_file={f}' for f in MODEL_GIN + ['runtime/cpu.gin']]
  if module == 'evaluate':
    gin_flags, bindings = [], []
  return ([sys.executable, '-m', f'melodi_jax.{module}', f'--workdir={workdir}'] + gin_flags +
          [f'--gin_bindings={b}' for b in bindings] + list(flags))


def cli_env(data_dir):
  """The environment of an entry-point subprocess: 2 fake CPU devices, not the session's 8. On a
  2-core machine under load, XLA's in-process all-reduce over 8 device threads can miss its 40 s
  rendezvous ("Expected 8 threads to join the rendezvous") and abort the process; sharding over
  8 devices is tested in-process (test_partitioning.py)."""
  env = dict(os.environ, MELODI_DATA_DIR=str(data_dir))
  env['XLA_FLAGS'] = re.sub(r'--xla_force_host_platform_device_count=\d+', '',
                            env.get('XLA_FLAGS', '')) + ' --xla_force_host_platform_device_count=2'
  env['PYTHONPATH'] = os.pathsep.join([REPO] + [p for p in [env.get('PYTHONPATH')] if p])
  return env


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
