"""The one train step (loss, gradient, update, memory carried to the next segment) that the trainer
runs and the benchmark and probes reuse; each caller jits it with its own shardings."""
from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax

from melodi_jax.train import metrics

# batch: inputs int32[B, T], targets int32[B, T], loss_weights float32[B, T], doc_start bool[B, N],
# bytes float32[B] (see train/inputs.py).
Batch = dict[str, jax.Array]
# step(state, memory, batch) -> (state, memory, metrics)
TrainStep = Callable[['TrainState', Any, Batch], tuple['TrainState', Any, dict]]


@flax.struct.dataclass
class TrainState:
  step: jax.Array       # int32[]: optimizer steps taken
  params: Any
  opt_state: Any
  rng: jax.Array        # uint32[2]: key data; dropout uses fold_in(rng, step)


def init_state(params: Any, tx: optax.GradientTransformation, dropout_key: jax.Array) -> TrainState:
  """The state before step 0: params (unboxed), tx's initial state, a typed dropout key."""
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    rng=jax.random.key_data(dropout_key))


def make_train_step(model, tx: optax.GradientTransformation,
                    schedule: optax.Schedule | None = None, *, dropout: bool = True,
                    extra_metrics: Callable[[jax.Array, Batch], dict] | None = None) -> TrainStep:
  """The train step of `model` under optimizer `tx` (unjitted).

  The loss is the mean next-token cross entropy over the weighted targets (metrics.loss_sums).
  Memory enters as a constant (no gradient into earlier segments: truncated backpropagation
  through time) and the new memory is returned for the next segment. A step whose loss or
  gradient norm is not finite changes nothing (state and memory stay the last good ones;
  metrics['ok'] is False). metrics: loss, grad_norm, learning_rate (schedule(step), 0 without
  one), ok, and the loss sums nats, tokens, bytes (float32 scalars), plus
  extra_metrics(logits [B, T, V], batch). `dropout`: whether the model runs with train=True.
  """
  def train_step(state: TrainState, memory: Any, batch: Batch):
    memory = jax.lax.stop_gradient(memory)
    dropout_key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)

    def loss_fn(params):
      logits, new_memory = model.apply(
          {'params': params}, batch['inputs'], memory, batch['doc_start'], train=dropout,
          rngs={'dropout': dropout_key})
      sums = metrics.loss_sums(logits, batch['targets'], batch['loss_weights'], batch['bytes'])
      if extra_metrics is not None:
        sums = dict(sums, **extra_metrics(logits, batch))
      return sums['nats'] / jnp.maximum(sums['tokens'], 1.0), (new_memory, sums)

    (loss, (new_memory, sums)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    grad_norm = optax.global_norm(grads)
    ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    new_state = state.replace(step=state.step + 1,
                              params=optax.apply_updates(state.params, updates),
                              opt_state=opt_state)
    new_state, new_memory = jax.tree.map(lambda new, old: jnp.where(ok, new, old),
                                         (new_state, new_memory), (state, memory))
    learning_rate = schedule(state.step) if schedule is not None else jnp.zeros((), jnp.float32)
    step_metrics = dict(loss=loss, grad_norm=grad_norm, learning_rate=learning_rate, ok=ok,
                        **sums)
    return new_state, new_memory, step_metrics

  return train_step
