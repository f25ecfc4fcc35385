"""MELODI long-term memory: a FIFO of L key/value slots, I new ones appended per window.

Read: cross-attention of the layer's queries to all filled slots (no position bias), gated against
self-attention inside `Attention`. Write: a token mixer (no norm, no residual) turns the window's
W + S outputs into I memory tokens whose keys/values (the layer's own projections) are appended;
the oldest I slots drop out. The FIFO spans L / I windows.
"""

import jax
import jax.numpy as jnp

from melodi_jax.layers.attention import Attention, KeyGroup

# Leaves of the state that every window shifts by I slots, appending its new ones last
# (models/recompute.py rebuilds them from the slots gained instead of saving them per window).
FIFO_LEAVES = ('keys', 'values')


def initial_state(batch_size: int, slots: int, num_heads: int, head_dim: int,
                  dtype: jnp.dtype) -> dict:
  """{'keys', 'values': [B, L, H, Dh] zeros, 'valid': bool[B, L] False}."""
  shape = (batch_size, slots, num_heads, head_dim)
  return {'keys': jnp.zeros(shape, dtype), 'values': jnp.zeros(shape, dtype),
          'valid': jnp.zeros((batch_size, slots), bool)}


def read(state: dict) -> KeyGroup:
  return KeyGroup(state['keys'], state['values'], None, state['valid'])


def append(state: dict, keys: jax.Array, values: jax.Array) -> dict:
  """FIFO append of keys/values [B, I, H, Dh]: drops the oldest I slots, newest last."""
  increment = keys.shape[1]
  def push(old, new):
    return jnp.concatenate([old[:, increment:], new.astype(old.dtype)], axis=1)
  return {'keys': push(state['keys'], keys), 'values': push(state['values'], values),
          'valid': push(state['valid'], jnp.ones(keys.shape[:2], bool))}


def write(attention: Attention, state: dict, memory_tokens: jax.Array) -> dict:
  """Appends the keys/values of this window's memory tokens [B, I, d] (made by the layer's
  increment mixer) using the layer's own norm and projections."""
  keys, values = attention.key_values(memory_tokens)
  return append(state, keys, values)
