"""Block-Recurrent Transformer states (arXiv 2203.07852): R state vectors carried across windows.

Read: the layer's tokens cross-attend to the incoming states (gated against their sliding-window
self-attention in the one `Attention`). Write: the states self-attend and cross-attend to the
window's token keys/values (a second `Attention` instance: the states' own projections), then a
gate replaces the residual: fixed (c * g + z * (1 - g), g = sigmoid(learned bias)) or LSTM-style
(input / forget gates, forget bias +1); an optional gated FFN follows. A document start puts the
learned initial state in: the reset sets `fresh`, and the layer substitutes its parameter there.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from melodi_jax.layers.attention import Attention, AttentionOutput, KeyGroup
from melodi_jax.layers.feedforward import FeedForward
from melodi_jax.memory.addon import Reading

GATES = ('fixed', 'lstm')
FORGET_BIAS = 1.0  # added to the forget (fixed: keep) gate's logit, subtracted from the input gate


def initial_state(batch_size: int, num_states: int, model_dim: int, dtype: jnp.dtype) -> dict:
  """{'states': [B, R, d] zeros (unused while fresh), 'fresh': bool[B] True}."""
  return {'states': jnp.zeros((batch_size, num_states, model_dim), dtype),
          'fresh': jnp.ones((batch_size,), bool)}


class LearnedInitialStates(nn.Module):
  """The [R, d] state every document starts from (a parameter, so not part of the memory)."""
  num_states: int
  model_dim: int

  @nn.compact
  def __call__(self) -> jax.Array:
    return self.param('states', nn.initializers.normal(1.0), (self.num_states, self.model_dim),
                      jnp.float32)


class StateGate(nn.Module):
  """states c [B, R, d], update h [B, R, d] -> next states. 'fixed': z = W h + b,
  c * g + z * (1 - g) with g = sigmoid(bias + 1); 'lstm': z = tanh(W h + b),
  c * sigmoid(W_f h + b_f + 1) + z * sigmoid(W_i h + b_i - 1)."""
  kind: str = 'lstm'
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, states: jax.Array, update: jax.Array) -> jax.Array:
    d = states.shape[-1]
    def dense(name):
      return nn.Dense(d, dtype=self.dtype, name=name)(update)
    if self.kind == 'fixed':
      bias = self.param('gate_bias', nn.initializers.zeros, (d,), jnp.float32)
      keep = jax.nn.sigmoid(bias + FORGET_BIAS).astype(self.dtype)
      return states * keep + dense('candidate') * (1 - keep)
    forget = jax.nn.sigmoid(dense('forget_gate') + FORGET_BIAS)
    write = jax.nn.sigmoid(dense('input_gate') - FORGET_BIAS)
    return states * forget + jnp.tanh(dense('candidate')) * write


@dataclasses.dataclass(frozen=True)
class RecurrentStates:
  """The recurrent layer's addon (see models/xl_layer.py)."""
  num_states: int = 512       # R
  gate: str = 'lstm'          # 'fixed' or 'lstm'
  state_ffn: bool = True      # gated FFN on the states after the attention gate
  self_weight_init: float = 0.5   # initial g of the tokens' g * self + (1 - g) * states gate
  key: str = 'recurrent'

  def attention_options(self) -> dict:
    g = self.self_weight_init
    return dict(cross_gate=True, gate_logit_init=float(np.log(g / (1 - g))))

  def initial_state(self, config, batch_size: int) -> dict:
    return initial_state(batch_size, self.num_states, config.model_dim, config.memory_dtype)

  def read(self, config, attention: Attention, state: dict, extras: dict,
           deterministic: bool) -> Reading:
    dtype = config.dtype
    learned = LearnedInitialStates(self.num_states, config.model_dim, name='initial_states')()
    states = jnp.where(state['fresh'][:, None, None], learned.astype(dtype)[None],
                       state['states'].astype(dtype))
    state_attention = Attention(**config.attention_kwargs(), cross_gate=True,
                                name='state_attention')
    keys, values = state_attention.key_values(states)
    return Reading(cross=KeyGroup(keys, values), context=(states, state_attention))

  def write(self, config, attention: Attention, state: dict, extras: dict, reading: Reading,
            tokens: jax.Array, attended: AttentionOutput,
            deterministic: bool) -> tuple[dict, dict]:
    dtype = config.dtype
    states, state_attention = reading.context
    # States see each other without order (one shared position) and the whole window.
    update = state_attention(states, np.zeros(self.num_states, np.int32),
                             cross=KeyGroup(attended.keys, attended.values),
                             deterministic=deterministic).output
    states = StateGate(self.gate, dtype, name='attention_gate')(states, update)
    if self.state_ffn:
      update = FeedForward(config.mlp_dim, config.activation, config.dropout_rate, dtype,
                           name='state_mlp')(states, deterministic)
      states = StateGate(self.gate, dtype, name='mlp_gate')(states, update)
    return {'states': states.astype(state['states'].dtype),
            'fresh': jnp.zeros_like(state['fresh'])}, extras
