"""The steps the benchmark times: the trainer's train step (train/step.py) on a synthetic batch,
under the benchmark's optimizer, and a forward eval step with the same loss."""

import dataclasses
from typing import Any, Callable

import gin
import jax
import jax.numpy as jnp
import optax

from melodi_jax import models
from melodi_jax.train import metrics
from melodi_jax.train.step import Batch, make_train_step


@gin.configurable
@dataclasses.dataclass(frozen=True)
class BenchConfig:
  """What one benchmarked step processes; flags of bench.py override these."""
  batch_size: int = 2          # B lanes
  segment_length: int = 2048   # T tokens per lane per step (a multiple of the window)
  optimizer: str = 'adamw'     # 'adamw' or 'adafactor'
  learning_rate: float = 1e-4


def make_optimizer(name: str, learning_rate: float) -> optax.GradientTransformation:
  if name == 'adamw':
    return optax.adamw(learning_rate)
  if name == 'adafactor':
    return optax.adafactor(learning_rate)
  raise ValueError(f"BenchConfig.optimizer = {name!r}: use 'adamw' or 'adafactor'")


def synthetic_batch(tokens: jax.Array, doc_start: jax.Array) -> Batch:
  """A training batch of tokens int32[B, T] predicting themselves shifted by one (the last
  position has no target inside the segment: weight 0); doc_start bool[B, N]; 1 byte a token."""
  weights = jnp.ones(tokens.shape, jnp.float32).at[:, -1].set(0.0)
  return {'inputs': tokens, 'targets': jnp.roll(tokens, -1, axis=1), 'loss_weights': weights,
          'doc_start': doc_start, 'bytes': jnp.full(tokens.shape[:1], tokens.shape[1],
                                                    jnp.float32)}


@dataclasses.dataclass
class Steps:
  """train(state, memory, batch) -> (state, memory, metrics): the trainer's step (state:
  train/step.py TrainState); evaluate(params, memory, batch) -> (memory, loss). Both jitted with
  donation of state and memory."""
  train: Callable[..., Any]
  evaluate: Callable[..., Any]
  train_fn: Callable[..., Any]     # the unjitted train step (for FLOP counting)
  eval_fn: Callable[..., Any]
  optimizer: optax.GradientTransformation


def make_steps(model: models.DecoderLM, optimizer: optax.GradientTransformation) -> Steps:
  train = make_train_step(model, optimizer)

  def evaluate(params, memory, batch: Batch):
    logits, new_memory = model.apply({'params': params}, batch['inputs'], memory,
                                     batch['doc_start'])
    sums = metrics.loss_sums(logits, batch['targets'], batch['loss_weights'], batch['bytes'])
    return new_memory, sums['nats'] / jnp.maximum(sums['tokens'], 1.0)

  return Steps(train=jax.jit(train, donate_argnums=(0, 1)),
               evaluate=jax.jit(evaluate, donate_argnums=(1,)),
               train_fn=train, eval_fn=evaluate, optimizer=optimizer)
