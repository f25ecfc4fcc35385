"""Stack plans of the baselines (DESIGN §5): Transformer-XL layers, one of which may carry a memory.

Layer indices may be negative (Python style, counted from the top): -3 is third from the top.
"""

import dataclasses
from typing import ClassVar

import gin

from melodi_jax.memory import knn, recurrent
from melodi_jax.models.config import ConfigError, ModelConfig
from melodi_jax.models.xl_layer import XLLayerOptions


def resolve_layer(index: int, config: ModelConfig, setting: str) -> int:
  """A layer index in 0..num_layers-1 from a gin value that may count from the top (< 0)."""
  resolved = index + config.num_layers if index < 0 else index
  if not 0 <= resolved < config.num_layers:
    raise ConfigError(f'{setting} = {index} is outside the {config.num_layers} layers '
                      '(ModelConfig.num_layers); negative values count from the top')
  return resolved


def _with_addon(config: ModelConfig, layer: int, addon) -> tuple[XLLayerOptions, ...]:
  return tuple(XLLayerOptions(addon if i == layer else None) for i in range(config.num_layers))


@gin.configurable
@dataclasses.dataclass(frozen=True)
class TransformerXLStack:
  """Transformer-XL with a sliding window: every token attends to exactly the W tokens before it."""
  summary_tokens: ClassVar[int] = 0

  def layers(self, config: ModelConfig) -> tuple[XLLayerOptions, ...]:
    return tuple(XLLayerOptions() for _ in range(config.num_layers))


@gin.configurable
@dataclasses.dataclass(frozen=True)
class MemorizingStack:
  """Memorizing Transformer: XL layers; `memory_layer` adds a kNN memory of past keys/values.

  top_k > 0: each query attends to its top_k memory keys; top_k = 0: dense attention over the
  whole memory (the variant the MELODI paper compares against).
  """
  summary_tokens: ClassVar[int] = 0
  memory_layer: int = -4        # Memorizing paper: layer 9 of 12
  memory_slots: int = 65536     # entries per lane and head
  top_k: int = 32               # 0: dense
  approximate: bool = False     # jax.lax.approx_max_k (TPU) instead of exact top-k

  def layers(self, config: ModelConfig) -> tuple[XLLayerOptions, ...]:
    layer = resolve_layer(self.memory_layer, config, 'MemorizingStack.memory_layer')
    if self.memory_slots < config.window_length:
      raise ConfigError(f'MemorizingStack.memory_slots = {self.memory_slots} must hold at least '
                        f'one window (ModelConfig.window_length = {config.window_length})')
    if self.top_k < 0:
      raise ConfigError('MemorizingStack.top_k must be >= 0 (0: dense attention)')
    return _with_addon(config, layer, knn.KnnMemory(self.memory_slots, self.top_k,
                                                    self.approximate))


@gin.configurable
@dataclasses.dataclass(frozen=True)
class BlockRecurrentStack:
  """Block-Recurrent Transformer: XL layers; `recurrent_layer` also carries R recurrent states."""
  summary_tokens: ClassVar[int] = 0
  recurrent_layer: int = -3     # third from the top, as in the paper
  num_states: int = 512         # R
  gate: str = 'lstm'            # 'fixed' or 'lstm'
  state_ffn: bool = True

  def layers(self, config: ModelConfig) -> tuple[XLLayerOptions, ...]:
    layer = resolve_layer(self.recurrent_layer, config, 'BlockRecurrentStack.recurrent_layer')
    if self.gate not in recurrent.GATES:
      raise ConfigError(f'BlockRecurrentStack.gate = {self.gate!r}: use one of {recurrent.GATES}')
    if self.num_states <= 0:
      raise ConfigError('BlockRecurrentStack.num_states must be positive')
    return _with_addon(config, layer, recurrent.RecurrentStates(self.num_states, self.gate,
                                                                self.state_ffn))
