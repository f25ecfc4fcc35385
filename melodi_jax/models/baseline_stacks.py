"""Stack plans of the baselines (DESIGN §5): Transformer-XL layers, one of which may carry a memory.

Layer indices may be negative (Python style, counted from the top): -3 is third from the top.
"""

import dataclasses
from typing import ClassVar

import gin

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
