"""Transformer-XL cache: a layer's keys/values of the previous window, for sliding-window attention.

Read: the cached W keys/values sit at positions -W..-1 before the window, and the layer attends
with span W + 1, so every token sees exactly the W tokens before it (and itself). Write: the
window's own keys/values replace the cache. Every baseline layer (XL, Memorizing, Block-Recurrent,
MemLong) keeps one; gradients flow through it within a segment (the trainer cuts at segments).
"""

import jax
import jax.numpy as jnp
import numpy as np

from melodi_jax.layers.attention import KeyGroup


def initial_state(batch_size: int, window: int, num_heads: int, head_dim: int,
                  dtype: jnp.dtype) -> dict:
  """{'keys', 'values': [B, W, H, Dh] zeros, 'valid': bool[B, W] False}."""
  shape = (batch_size, window, num_heads, head_dim)
  return {'keys': jnp.zeros(shape, dtype), 'values': jnp.zeros(shape, dtype),
          'valid': jnp.zeros(shape[:2], bool)}


def span(window: int) -> int:
  """Attention span (Attention's `span`) that shows a token exactly the W tokens before it."""
  return window + 1


def read(state: dict) -> KeyGroup:
  """The previous window's keys/values at positions -W..-1; empty lanes are masked."""
  window = state['keys'].shape[1]
  return KeyGroup(state['keys'], state['values'], np.arange(-window, 0), state['valid'])


def write(state: dict, keys: jax.Array, values: jax.Array) -> dict:
  """The window's own keys/values [B, W, H, Dh] become the cache of the next window."""
  assert keys.shape == state['keys'].shape, (keys.shape, state['keys'].shape)
  return {'keys': keys.astype(state['keys'].dtype), 'values': values.astype(state['values'].dtype),
          'valid': jnp.ones_like(state['valid'])}
