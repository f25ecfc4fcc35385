"""How many steps a model needs to learn to copy: a pure induction task, for sizing the recall
budget (the recall test needs a copy circuit before any memory can help).

  python -m melodi_jax.experiments.copy_probe --gin_file=experiments/compare_small/transformer_xl.gin \
      [--steps=2000] [--json=OUT.json]

Every lane is a random pattern of 8..64 lowercase letters repeated to the segment's end (a new
pattern and length every step), so after the first period every token can be predicted by copying
from one period back and by nothing else: the loss stays at ln 26 = 3.26 nats until the model
forms an induction circuit (the period varies, so a fixed-offset head does not do it). Trained on
the targets --loss_on names: `after_window` (default) the tokens after the first window, all
copies; `copyable` every target that repeats the one a period back, first window included; `all`
every target, so also the first period's, which nothing predicts. Scored on the tokens after the
first window in every case. AdamW at a constant rate, the model's own batch shape (TrainConfig
batch_size and segment_length). Prints the loss every --log_every steps and the first step whose
loss is below --formed_below nats.
"""
from __future__ import annotations

import json
import os
import time
from typing import Sequence

from absl import flags
import numpy as np

from melodi_jax.train import cli

LETTERS = 26
FIRST_LETTER = ord('a')
LOSS_ON = ('after_window', 'copyable', 'all')


def copy_batch(rng: np.random.Generator, batch_size: int, length: int,
               periods: tuple[int, int] = (8, 64)
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(inputs, targets, copyable): int32[B, length] each lane a random pattern repeated, targets
  shifted by one; bool[B, length] whether a target repeats the token one period before it."""
  rows = np.zeros((batch_size, length + 1), np.int32)
  copyable = np.zeros((batch_size, length), bool)
  for lane in range(batch_size):
    period = int(rng.integers(periods[0], periods[1] + 1))
    pattern = rng.integers(FIRST_LETTER, FIRST_LETTER + LETTERS, period)
    rows[lane] = np.tile(pattern, length // period + 2)[:length + 1]
    copyable[lane, period - 1:] = True  # target t is token t + 1
  return rows[:, :-1], rows[:, 1:], copyable


def loss_weights(copyable: np.ndarray, window: int, loss_on: str) -> np.ndarray:
  """float32[B, T]: the training loss weights of a copy batch (see the module doc)."""
  if loss_on == 'after_window':
    weights = np.zeros(copyable.shape, np.float32)
    weights[:, window:] = 1.0  # after the first window every target is a copy
    return weights
  if loss_on == 'copyable':
    return copyable.astype(np.float32)
  if loss_on == 'all':
    return np.ones(copyable.shape, np.float32)
  raise ValueError(f'loss_on {loss_on!r} is not one of {LOSS_ON}')


def run(gin_files: Sequence[str], bindings: Sequence[str], steps: int, learning_rate: float,
        log_every: int, formed_below: float, seed: int = 0, loss_on: str = 'after_window',
        gin_search_paths: Sequence[str] = ('configs',)) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from melodi_jax.train import config  # pylint: disable=g-import-not-at-top
  from melodi_jax.train import step as step_lib  # pylint: disable=g-import-not-at-top

  cli.parse_gin(list(gin_files), list(bindings), list(gin_search_paths))
  train_config = config.TrainConfig()
  model = cli.build_model(train_config.segment_length)
  batch, length, window = train_config.batch_size, train_config.segment_length, model.window_length
  rng = np.random.default_rng(seed)
  memory = model.init_memory(batch)
  doc_start = np.zeros((batch, length // window), bool)
  doc_start[:, 0] = True
  inputs, _, _ = copy_batch(rng, batch, length)
  params = model.init(jax.random.key(seed), inputs, memory, doc_start)['params']
  optimizer = optax.adamw(learning_rate, b2=0.98)
  state = step_lib.init_state(params, optimizer, jax.random.key(seed))

  def scored(logits, batch):  # the copy loss after the first window, whatever is trained
    nats = optax.softmax_cross_entropy_with_integer_labels(logits, batch['targets'])
    return {'scored': nats[:, window:].mean()}

  # Deterministic (no dropout). Every lane starts a document at window 0, so each step starts
  # from the initial memory.
  step = jax.jit(step_lib.make_train_step(model, optimizer, dropout=False, extra_metrics=scored))

  curve, formed, start = [], None, time.time()
  for i in range(1, steps + 1):
    inputs, targets, copyable = copy_batch(rng, batch, length)
    state, _, step_metrics = step(state, memory, {
        'inputs': inputs, 'targets': targets, 'doc_start': doc_start,
        'loss_weights': loss_weights(copyable, window, loss_on),
        'bytes': np.full(batch, length, np.float32)})
    if i % log_every == 0 or i == steps:
      loss = float(step_metrics['scored'])
      curve.append({'step': i, 'loss': loss})
      if formed is None and loss < formed_below:
        formed = i
      print(f'step {i}/{steps}  copy loss {loss:.3f} nats (chance {np.log(LETTERS):.2f})  '
            f'elapsed {time.time() - start:.0f}s', flush=True)
  return {'gin_files': list(gin_files), 'bindings': list(bindings), 'steps': steps,
          'learning_rate': learning_rate, 'batch_size': batch, 'segment_length': length,
          'seed': seed, 'loss_on': loss_on, 'formed_below': formed_below, 'formed_at_step': formed, 'curve': curve}


def define_flags() -> None:
  """The command-line flags (defined only when run as a program: the library stays importable
  beside other entry points)."""
  cli.define_gin_flags()
  flags.DEFINE_integer('steps', 2000, 'Training steps.')
  flags.DEFINE_float('learning_rate', 3e-3, 'AdamW learning rate (constant).')
  flags.DEFINE_integer('log_every', 100, 'Print and record the copy loss every this many steps.')
  flags.DEFINE_float('formed_below', 1.0, 'The copy circuit counts as formed at the first '
                     'logged step whose copy loss is below this many nats.')
  flags.DEFINE_integer('seed', 0, 'Parameters and patterns.')
  flags.DEFINE_enum('loss_on', 'after_window', LOSS_ON,
                    'The targets trained on (scored: after the first window).')
  flags.DEFINE_string('json', None, 'Write the curve here.')


FLAGS = flags.FLAGS


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise cli.UserError(f'unexpected arguments {argv[1:]}; pass everything as --flags')
  if not FLAGS.gin_file:
    raise cli.UserError('--gin_file is required: pass the model and size configs')
  if FLAGS.steps < 1 or FLAGS.log_every < 1:
    raise cli.UserError('--steps and --log_every must be >= 1')
  result = run(FLAGS.gin_file, FLAGS.gin_bindings, FLAGS.steps, FLAGS.learning_rate,
               FLAGS.log_every, FLAGS.formed_below, FLAGS.seed, FLAGS.loss_on,
               FLAGS.gin_search_paths)
  formed = result['formed_at_step']
  print(f'copy circuit formed (loss < {FLAGS.formed_below}) at step {formed}' if formed else
        f'copy circuit not formed in {FLAGS.steps} steps (loss never < {FLAGS.formed_below})')
  if FLAGS.json:
    with open(FLAGS.json + '.tmp', 'w', encoding='utf-8') as f:
      json.dump(result, f, indent=1)
    os.replace(FLAGS.json + '.tmp', FLAGS.json)


if __name__ == '__main__':
  define_flags()
  cli.run(main)
