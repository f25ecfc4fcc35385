"""The Transformer-XL layer, and the baselines built on it by adding one memory to it.

Every baseline layer is this layer: sliding-window attention over [XL cache, window] and an FFN.
An optional `MemoryAddon` (memory/addon.py: Memorizing's kNN memory, Block-Recurrent states,
MemLong's retrieval) adds key groups and/or a gated cross memory to the same attention and
updates its own state.
"""

import dataclasses

import flax.linen as nn
import jax
import numpy as np

from melodi_jax.layers.attention import Attention, WindowCache
from melodi_jax.memory import xl_cache
from melodi_jax.memory.addon import MemoryAddon, Reading
from melodi_jax.models.block import attention_and_ffn
from melodi_jax.models.config import ModelConfig

XL_CACHE = 'xl_cache'  # key of the XL cache in a baseline layer's memory


@dataclasses.dataclass(frozen=True)
class XLLayerOptions:
  """An XL layer, with `addon` (None: plain Transformer-XL layer)."""
  addon: MemoryAddon | None = None

  def module(self, config: ModelConfig, name: str) -> nn.Module:
    return XLLayer(config, self, name=name)

  def initial_memory(self, config: ModelConfig, batch_size: int) -> dict:
    memory = {XL_CACHE: xl_cache.initial_state(batch_size, config.window_length,
                                               config.num_heads, config.head_dim,
                                               config.memory_dtype)}
    if self.addon is not None:
      memory[self.addon.key] = self.addon.initial_state(config, batch_size)
    return memory


class XLLayer(nn.Module):
  """One window: tokens attend to the W tokens before them (+ the addon's memory), then FFN."""
  config: ModelConfig
  options: XLLayerOptions

  @nn.compact
  def __call__(self, x: jax.Array, extras: dict, memory: dict,
               deterministic: bool,
               cache: WindowCache | None = None) -> tuple[jax.Array, dict, dict | WindowCache]:
    """x: [B, W, d] at positions 0..W-1; memory: this layer's part -> (x, extras, memory).

    With `cache` (decoding one token x [B, 1, d]): the addon reads, nothing is written; returns
    (token [B, 1, d], extras, the updated cache).
    """
    config, addon = self.config, self.options.addon
    window = x.shape[1]
    attention = Attention(**config.attention_kwargs(),
                          **(addon.attention_options() if addon else {}), name='attention')
    reading = Reading()
    if addon is not None:
      reading = addon.read(config, attention, memory[addon.key], extras, deterministic)
      extras = dict(extras, **(reading.extras or {}))
    groups = list(reading.groups) + [xl_cache.read(memory[XL_CACHE])]
    h, attended = attention_and_ffn(config, attention, x, np.arange(window), groups,
                                    reading.cross, xl_cache.span(config.window_length),
                                    deterministic, cache)
    if cache is not None:
      return h, extras, cache._replace(keys=attended.keys, values=attended.values)
    new_memory = {XL_CACHE: xl_cache.write(memory[XL_CACHE], attended.keys, attended.values)}
    if addon is not None:
      new_memory[addon.key], extras = addon.write(config, attention, memory[addon.key], extras,
                                                  reading, h, attended, deterministic)
    return h, extras, new_memory
