"""Memorizing Transformer memory (arXiv 2203.08913): a ring buffer of past (key, value) pairs.

Per lane and head, `slots` entries; after each window the layer's own W keys/values overwrite the
oldest entries (not differentiable: stop_gradient). Read: the layer's queries cross-attend to the
memory, either to each query's top-k keys or densely to all filled entries (the same attention
primitive; `Attention.cross_top_k`), combined with local XL attention by a learned per-head gate.
Empty entries never receive attention; the reset at a document start empties a lane.
"""

import dataclasses

import jax
import jax.numpy as jnp

from melodi_jax.layers.attention import Attention, AttentionOutput, KeyGroup
from melodi_jax.memory.addon import Reading


def initial_state(batch_size: int, slots: int, num_heads: int, head_dim: int,
                  dtype: jnp.dtype) -> dict:
  """{'keys', 'values': [B, L, H, Dh] zeros, 'valid': bool[B, L] False, 'next': int32[B] 0}."""
  shape = (batch_size, slots, num_heads, head_dim)
  return {'keys': jnp.zeros(shape, dtype), 'values': jnp.zeros(shape, dtype),
          'valid': jnp.zeros(shape[:2], bool), 'next': jnp.zeros((batch_size,), jnp.int32)}


def read(state: dict) -> KeyGroup:
  """The memory as a position-free cross group; empty entries masked."""
  return KeyGroup(state['keys'], state['values'], None, state['valid'])


def write(state: dict, keys: jax.Array, values: jax.Array) -> dict:
  """Ring-buffer write of keys/values [B, W, H, Dh] at each lane's next slots (oldest first).

  Needs W <= slots. The written entries carry no gradient.
  """
  slots, count = state['keys'].shape[1], keys.shape[1]
  assert count <= slots, f'{count} entries per window do not fit {slots} memory slots'
  index = (state['next'][:, None] + jnp.arange(count)) % slots            # [B, W]
  put = jax.vmap(lambda old, i, new: old.at[i].set(new.astype(old.dtype)))
  keys, values = jax.lax.stop_gradient(keys), jax.lax.stop_gradient(values)
  return {'keys': put(state['keys'], index, keys), 'values': put(state['values'], index, values),
          'valid': put(state['valid'], index, jnp.ones(index.shape, bool)),
          'next': (state['next'] + count) % slots}


@dataclasses.dataclass(frozen=True)
class KnnMemory:
  """The Memorizing layer's addon (see models/xl_layer.py). top_k = 0: dense attention."""
  slots: int = 65536
  top_k: int = 32
  approximate: bool = False
  key: str = 'knn'

  def attention_options(self) -> dict:
    return dict(cross_gate=True, gate_per_head=True, cross_top_k=self.top_k,
                cross_approximate=self.approximate)

  def initial_state(self, config, batch_size: int) -> dict:
    return initial_state(batch_size, self.slots, config.num_heads, config.head_dim,
                         config.memory_dtype)

  def read(self, config, attention: Attention, state: dict, extras: dict, deterministic: bool):
    return Reading(cross=read(state))

  def write(self, config, attention: Attention, state: dict, extras: dict, reading: Reading,
            tokens: jax.Array, attended: AttentionOutput, deterministic: bool) -> tuple[dict, dict]:
    return write(state, attended.keys, attended.values), extras
