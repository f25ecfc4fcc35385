"""The memory pytree: naming, initial values and the per-lane reset at document starts; the
decoding cache of the current window."""

import jax
import jax.numpy as jnp

from melodi_jax.models.config import ModelConfig


def layer_name(index: int) -> str:
  """Name of layer `index`, used both for its parameters and for its part of the memory."""
  return f'layer_{index:02d}'


def initial_memory(config: ModelConfig, batch_size: int) -> dict:
  """{layer_name: that layer's memory at a document start}; every leaf [B, ...]."""
  return {layer_name(i): options.initial_memory(config, batch_size)
          for i, options in enumerate(config.layer_options())}


def initial_cache(config: ModelConfig, batch_size: int) -> dict:
  """The decoding cache of an empty window: {'index': int32[] 0 (the next token's slot),
  layer_name: {'keys', 'values': [B, W, H, Dh] zeros in the compute dtype}}."""
  shape = (batch_size, config.window_length, config.num_heads, config.head_dim)
  cache = {layer_name(i): {'keys': jnp.zeros(shape, config.dtype),
                           'values': jnp.zeros(shape, config.dtype)}
           for i in range(config.num_layers)}
  cache['index'] = jnp.zeros((), jnp.int32)
  return cache


def fifo_increments(config: ModelConfig, memory: dict) -> tuple[int, ...]:
  """One int per leaf of `memory` (jax.tree.leaves order): I for the leaves a layer declares as
  FIFOs appending I slots per window (its options' `fifo_increments()`), else 0."""
  declared = {layer_name(i): getattr(options, 'fifo_increments', dict)()
              for i, options in enumerate(config.layer_options())}

  def increment(path, _):
    names = [getattr(entry, 'key', None) for entry in path]
    found = declared
    for name in names:
      found = found.get(name, 0) if isinstance(found, dict) else 0
    return found if isinstance(found, int) else 0

  return tuple(jax.tree.leaves(jax.tree_util.tree_map_with_path(increment, memory)))


def reset(memory: dict, initial: dict, doc_start: jax.Array) -> dict:
  """Lanes with doc_start (bool[B]) get the initial memory; the other lanes keep theirs."""
  def choose(current, fresh):
    lanes = doc_start.reshape(doc_start.shape + (1,) * (current.ndim - 1))
    return jnp.where(lanes, fresh.astype(current.dtype), current)
  return jax.tree_util.tree_map(choose, memory, initial)
