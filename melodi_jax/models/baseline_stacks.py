"""Stack plans of the baselines: Transformer-XL layers, some carrying a memory addon.

Layer indices may be negative (Python style, counted from the top): -3 is third from the top.
"""

import dataclasses

import gin

from melodi_jax.errors import UserError
from melodi_jax.memory import knn, recurrent, retrieval
from melodi_jax.memory.addon import MemoryAddon
from melodi_jax.models.config import ModelConfig
from melodi_jax.models.xl_layer import XLLayerOptions


def resolve_layer(index: int, config: ModelConfig, setting: str) -> int:
  """A layer index in 0..num_layers-1 from a gin value that may count from the top (< 0)."""
  resolved = index + config.num_layers if index < 0 else index
  if not 0 <= resolved < config.num_layers:
    raise UserError(f'{setting} = {index} is outside the {config.num_layers} layers '
                    '(ModelConfig.num_layers); negative values count from the top')
  return resolved


def _require(*checks: tuple[bool, str]) -> None:
  for ok, message in checks:
    if not ok:
      raise UserError(message)


def _with_addon(config: ModelConfig, index: int, setting: str,
                addon: MemoryAddon) -> tuple[XLLayerOptions, ...]:
  """XL layers; the one at `index` (the gin value of `setting`) carries `addon`."""
  layer = resolve_layer(index, config, setting)
  return tuple(XLLayerOptions(addon if i == layer else None) for i in range(config.num_layers))


@gin.configurable
@dataclasses.dataclass(frozen=True)
class TransformerXLStack:
  """Transformer-XL with a sliding window: every token attends to exactly the W tokens before it."""

  def layers(self, config: ModelConfig) -> tuple[XLLayerOptions, ...]:
    return tuple(XLLayerOptions() for _ in range(config.num_layers))


@gin.configurable
@dataclasses.dataclass(frozen=True)
class MemorizingStack:
  """Memorizing Transformer: XL layers; `memory_layer` adds a kNN memory of past keys/values.

  top_k > 0: each query attends to its top_k memory keys; top_k = 0: dense attention over the
  whole memory (the variant the MELODI paper compares against).
  """
  memory_layer: int = -4        # Memorizing paper: layer 9 of 12
  memory_slots: int = 65536     # entries per lane and head
  top_k: int = 32               # 0: dense
  approximate: bool = False     # jax.lax.approx_max_k (TPU) instead of exact top-k
  # Entries in the train step's memory (0: memory_slots). When every training document fits this
  # many tokens (the memory resets at each document start), a smaller training buffer holds every
  # key the full one would, the empty slots get no weight, and the step is cheaper; evaluation
  # keeps memory_slots. A longer document overwrites its oldest entries, as the full buffer does.
  train_memory_slots: int = 0

  def for_training(self) -> 'MemorizingStack':
    """This plan with the training buffer (ModelConfig.for_training)."""
    return dataclasses.replace(self, memory_slots=self.train_memory_slots or self.memory_slots,
                               train_memory_slots=0)

  def layers(self, config: ModelConfig) -> tuple[XLLayerOptions, ...]:
    _require((self.memory_slots >= config.window_length,
              f'MemorizingStack.memory_slots = {self.memory_slots} must hold at least one window '
              f'(ModelConfig.window_length = {config.window_length})'),
             (self.top_k >= 0, 'MemorizingStack.top_k must be >= 0 (0: dense attention)'),
             (self.train_memory_slots == 0 or
              config.window_length <= self.train_memory_slots <= self.memory_slots,
              f'MemorizingStack.train_memory_slots = {self.train_memory_slots} must be 0 (the '
              f'same as memory_slots) or hold one window ({config.window_length}) and at most '
              f'memory_slots ({self.memory_slots})'))
    memory = knn.KnnMemory(self.memory_slots, self.top_k, self.approximate)
    return _with_addon(config, self.memory_layer, 'MemorizingStack.memory_layer', memory)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class BlockRecurrentStack:
  """Block-Recurrent Transformer: XL layers; `recurrent_layer` also carries R recurrent states."""
  recurrent_layer: int = -3     # third from the top, as in the paper
  num_states: int = 512         # R
  gate: str = 'lstm'            # 'fixed' or 'lstm'
  state_ffn: bool = True
  # Initial weight g of self-attention in the recurrent layer's g * self + (1 - g) * states
  # (0.5: even; near 1 keeps a warm-started layer's self-attention intact at first).
  self_weight_init: float = 0.5

  def layers(self, config: ModelConfig) -> tuple[XLLayerOptions, ...]:
    _require((self.gate in recurrent.GATES,
              f'BlockRecurrentStack.gate = {self.gate!r}: use one of {recurrent.GATES}'),
             (self.num_states > 0, 'BlockRecurrentStack.num_states must be positive'),
             (0 < self.self_weight_init < 1,
              f'BlockRecurrentStack.self_weight_init = {self.self_weight_init} must be in (0, 1)'))
    states = recurrent.RecurrentStates(self.num_states, self.gate, self.state_ffn,
                                       self.self_weight_init)
    return _with_addon(config, self.recurrent_layer, 'BlockRecurrentStack.recurrent_layer', states)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class MemLongStack:
  """MemLong-style retrieval: XL layers; `memory_layer` keeps the chunk index (its mean-pooled
  output is the retrieval key), the retrieval layers above it attend to the retrieved chunks."""
  memory_layer: int = 5
  chunks: int = 64                      # C: past windows kept per lane
  top_k: int = 4                        # chunks retrieved per window
  retrieval_layers: tuple = ()          # empty: every layer above memory_layer
  train_only_above_memory_layer: bool = False   # see models/freezing.py

  def layers(self, config: ModelConfig) -> tuple[XLLayerOptions, ...]:
    memory_layer = resolve_layer(self.memory_layer, config, 'MemLongStack.memory_layer')
    readers = {resolve_layer(i, config, 'MemLongStack.retrieval_layers')
               for i in self.retrieval_layers} or set(range(memory_layer + 1, config.num_layers))
    _require((min(readers, default=config.num_layers) > memory_layer,
              f'MemLongStack.retrieval_layers {sorted(readers)} must all be above memory_layer = '
              f'{memory_layer}'),
             (self.chunks >= 2 and 0 < self.top_k < self.chunks,
              f'MemLongStack needs chunks >= 2 and 0 < top_k < chunks (got chunks = {self.chunks}, '
              f'top_k = {self.top_k}): the newest chunk is never retrieved'))
    plan = []
    for i in range(config.num_layers):
      addon = None
      if i == memory_layer:
        addon = retrieval.RetrievalIndex(self.chunks, self.top_k)
      elif i in readers:
        addon = retrieval.RetrievalReader(self.chunks)
      plan.append(XLLayerOptions(addon))
    return tuple(plan)

  def frozen_layers(self, config: ModelConfig) -> tuple[int, ...]:
    """Layers whose parameters the optimizer must not change (with the embedding)."""
    if not self.train_only_above_memory_layer:
      return ()
    return tuple(range(resolve_layer(self.memory_layer, config, 'MemLongStack.memory_layer') + 1))
