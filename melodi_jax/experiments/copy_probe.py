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

import argparse
import json
import os
import sys
import time
from typing import Sequence

import numpy as np

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
        log_every: int, formed_below: float, seed: int = 0, loss_on: str = 'after_window') -> dict:
  import gin  # pylint: disable=g-import-not-at-top
  gin.clear_config()  # drops the bindings of a run parsed before in this process
  import jax  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from melodi_jax import models  # pylint: disable=g-import-not-at-top
  from melodi_jax.train import cli, config  # pylint: disable=g-import-not-at-top
  from melodi_jax.train import step as step_lib  # pylint: disable=g-import-not-at-top

  cli.parse_gin(list(gin_files), list(bindings), ['configs'])
  train_config = config.TrainConfig()
  model = models.build_from_gin(train_config.segment_length)  # from the gin state parsed above
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


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--gin_file', action='append', required=True)
  parser.add_argument('--gin_bindings', action='append', default=[])
  parser.add_argument('--steps', type=int, default=2000)
  parser.add_argument('--learning_rate', type=float, default=3e-3)
  parser.add_argument('--log_every', type=int, default=100)
  parser.add_argument('--formed_below', type=float, default=1.0)
  parser.add_argument('--seed', type=int, default=0, help='parameters and patterns')
  parser.add_argument('--loss_on', choices=LOSS_ON, default='after_window',
                      help='the targets trained on (scored: after the first window)')
  parser.add_argument('--json', default=None, help='write the curve here')
  args = parser.parse_args(argv)
  if args.steps < 1 or args.log_every < 1:
    print('error: --steps and --log_every must be >= 1', file=sys.stderr)
    sys.exit(2)
  result = run(args.gin_file, args.gin_bindings, args.steps, args.learning_rate, args.log_every,
               args.formed_below, args.seed, args.loss_on)
  formed = result['formed_at_step']
  print(f'copy circuit formed (loss < {args.formed_below}) at step {formed}' if formed else
        f'copy circuit not formed in {args.steps} steps (loss never < {args.formed_below})')
  if args.json:
    with open(args.json + '.tmp', 'w', encoding='utf-8') as f:
      json.dump(result, f, indent=1)
    os.replace(args.json + '.tmp', args.json)


if __name__ == '__main__':
  main()
