"""The Transformer-XL layer, and the baselines built on it by adding one memory to it.

Every baseline layer is this layer: sliding-window attention over [XL cache, window] and an FFN.
An optional `MemoryAddon` (Memorizing's kNN memory, Block-Recurrent states, MemLong's retrieval)
adds key groups and/or a gated cross memory to the same attention and updates its own state.
"""

import dataclasses
from typing import Any, NamedTuple, Protocol, Sequence

import flax.linen as nn
import jax
import numpy as np

from melodi_jax.layers.attention import Attention, AttentionOutput, KeyGroup
from melodi_jax.memory import xl_cache
from melodi_jax.models.block import attention_and_ffn
from melodi_jax.models.config import ModelConfig

XL_CACHE = 'xl_cache'  # key of the XL cache in a baseline layer's memory


class Reading(NamedTuple):
  """What an addon contributes to the attention: key groups (one softmax with the window), a
  gated cross memory, and anything its `write` needs again (`context`)."""
  groups: Sequence[KeyGroup] = ()
  cross: KeyGroup | None = None
  context: Any = None


class MemoryAddon(Protocol):
  """A memory added to an XL layer; its state lives at memory[layer][addon.key]."""
  key: str

  def attention_options(self) -> dict:
    """Extra fields of the layer's Attention (e.g. cross_gate=True)."""

  def initial_state(self, config: ModelConfig, batch_size: int) -> dict:
    """The addon's state at a document start; every leaf [B, ...]."""

  def read(self, config: ModelConfig, attention: Attention, state: dict, extras: dict,
           deterministic: bool) -> Reading:
    """Called before the attention (inside the layer's compact scope: may create submodules)."""

  def write(self, config: ModelConfig, attention: Attention, state: dict, extras: dict,
            reading: Reading, tokens: jax.Array, attended: AttentionOutput,
            deterministic: bool) -> tuple[dict, dict]:
    """After the FFN: tokens [B, W, d] (layer output) -> (state for the next window, extras)."""


@dataclasses.dataclass(frozen=True)
class XLLayerOptions:
  """An XL layer, with `addon` (None: plain Transformer-XL layer)."""
  addon: Any = None

  def module(self, config: ModelConfig, name: str) -> nn.Module:
    return XLLayer(config, self, name=name)

  def initial_memory(self, config: ModelConfig, batch_size: int) -> dict:
    memory = {XL_CACHE: xl_cache.initial_state(batch_size, config.window_length,
                                               config.num_heads, config.head_dim,
                                               config.carry_dtype)}
    if self.addon is not None:
      memory[self.addon.key] = self.addon.initial_state(config, batch_size)
    return memory


class XLLayer(nn.Module):
  """One window: tokens attend to the W tokens before them (+ the addon's memory), then FFN."""
  config: ModelConfig
  options: XLLayerOptions

  @nn.compact
  def __call__(self, x: jax.Array, extras: dict, memory: dict,
               deterministic: bool) -> tuple[jax.Array, dict, dict]:
    """x: [B, W, d] at positions 0..W-1; memory: this layer's part -> (x, extras, memory)."""
    config, addon = self.config, self.options.addon
    window = x.shape[1]
    attention = Attention(**config.attention_kwargs(),
                          **(addon.attention_options() if addon else {}), name='attention')
    reading = Reading()
    if addon is not None:
      reading = addon.read(config, attention, memory[addon.key], extras, deterministic)
    groups = list(reading.groups) + [xl_cache.read(memory[XL_CACHE])]
    h, attended = attention_and_ffn(config, attention, x, np.arange(window), groups,
                                    reading.cross, xl_cache.span(window), deterministic)
    new_memory = {XL_CACHE: xl_cache.write(memory[XL_CACHE], attended.keys, attended.values)}
    if addon is not None:
      new_memory[addon.key], extras = addon.write(config, attention, memory[addon.key], extras,
                                                  reading, h, attended, deterministic)
    return h, extras, new_memory
