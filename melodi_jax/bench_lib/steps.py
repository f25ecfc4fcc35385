"""A small train step and eval step for benchmarking (next-token cross entropy, optax, one jit).

Until the trainer's step is shared, this is the step the benchmark times. Within a segment the
loss covers positions 0 .. T-2 (the last token has no target inside the segment); memory is
carried from step to step with gradients stopped, as in truncated BPTT.
"""

import dataclasses
from typing import Any, Callable

import gin
import jax
import jax.numpy as jnp
import optax

from melodi_jax import models


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


def next_token_loss(logits: jax.Array, tokens: jax.Array) -> jax.Array:
  """Mean cross entropy of logits float32[B, T, V] predicting tokens int32[B, T] shifted by one."""
  logp = jax.nn.log_softmax(logits[:, :-1])
  picked = jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]
  return -jnp.mean(picked)


@dataclasses.dataclass
class Steps:
  """train(params, opt_state, memory, tokens, doc_start, rng) -> (params, opt_state, memory, loss);
  evaluate(params, memory, tokens, doc_start) -> (memory, loss). Both jitted with donation."""
  train: Callable[..., Any]
  evaluate: Callable[..., Any]
  train_fn: Callable[..., Any]     # the unjitted train step (for FLOP counting)
  eval_fn: Callable[..., Any]
  optimizer: optax.GradientTransformation


def make_steps(model: models.DecoderLM, optimizer: optax.GradientTransformation) -> Steps:
  def loss_fn(params, memory, tokens, doc_start, rng):
    logits, new_memory = model.apply({'params': params}, tokens, memory, doc_start, train=True,
                                     rngs={'dropout': rng})
    return next_token_loss(logits, tokens), new_memory

  def train(params, opt_state, memory, tokens, doc_start, rng):
    (loss, new_memory), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, memory, tokens, doc_start, rng)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return params, opt_state, jax.lax.stop_gradient(new_memory), loss

  def evaluate(params, memory, tokens, doc_start):
    logits, new_memory = model.apply({'params': params}, tokens, memory, doc_start)
    return new_memory, next_token_loss(logits, tokens)

  return Steps(train=jax.jit(train, donate_argnums=(0, 1, 2)),
               evaluate=jax.jit(evaluate, donate_argnums=(1,)),
               train_fn=train, eval_fn=evaluate, optimizer=optimizer)
