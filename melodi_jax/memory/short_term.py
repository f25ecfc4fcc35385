"""MELODI short-term memory: M compressed tokens a layer passes to its own next window.

Read: the M memory tokens become keys/values (through the layer's own norm and projections) at
positions -M..-1, before the window. Write: the token mixer M-right compresses the window's
W + S outputs into the M tokens for the next window.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from melodi_jax.layers.attention import Attention, KeyGroup
from melodi_jax.layers.mixing import TokenMixer


def initial_state(batch_size: int, slots: int, model_dim: int, dtype: jnp.dtype) -> dict:
  """{'tokens': [B, M, d] zeros, 'filled': bool[B] False}: empty memory is masked out."""
  return {'tokens': jnp.zeros((batch_size, slots, model_dim), dtype),
          'filled': jnp.zeros((batch_size,), bool)}


def read(attention: Attention, state: dict) -> KeyGroup:
  """Keys/values of the memory tokens at positions -M..-1; empty lanes are masked."""
  tokens = state['tokens']
  slots = tokens.shape[1]
  keys, values = attention.key_values(tokens)
  valid = jnp.broadcast_to(state['filled'][:, None], tokens.shape[:2])
  return KeyGroup(keys, values, np.arange(-slots, 0), valid)


class ShortTermWriter(nn.Module):
  """M-right: (window outputs [B, W, d], summaries [B, S, d]) -> next state's M tokens."""
  slots: int
  dtype: jnp.dtype = jnp.float32
  memory_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens: jax.Array, summaries: jax.Array | None) -> dict:
    inputs = [tokens] if summaries is None else [tokens, summaries]
    # The residual onto the summaries applies when the memory is exactly summary-sized (S = M).
    residual = summaries if summaries is not None and summaries.shape[1] == self.slots else None
    memory = TokenMixer(self.slots, dtype=self.dtype, name='mixer')(inputs, residual)
    return {'tokens': memory.astype(self.memory_dtype),
            'filled': jnp.ones((tokens.shape[0],), bool)}
