"""Which parameters the optimizer may change: MemLong's option to train only the upper layers.

A stack plan may define `frozen_layers(config) -> tuple[int, ...]` (MemLongStack does, when
`train_only_above_memory_layer`); those layers and the token embedding (below every layer; with
tie_embeddings the logits share it) keep their values. The trainer wraps its optimizer:
`optimizer = freezing.freeze_lower_layers(optimizer, model.config)`.
"""

from typing import Any

import jax
import optax

from melodi_jax.models import state
from melodi_jax.models.config import ModelConfig

TRAINABLE, FROZEN = 'trainable', 'frozen'
EMBEDDING = 'embed'  # DecoderLM's token embedding submodule


def frozen_names(config: ModelConfig) -> frozenset[str]:
  """Names of the parameter subtrees that stay fixed (empty when nothing is frozen)."""
  frozen_layers = getattr(config.stack, 'frozen_layers', lambda _: ())(config)
  if not frozen_layers:
    return frozenset()
  return frozenset({EMBEDDING} | {state.layer_name(i) for i in frozen_layers})


def parameter_labels(params: Any, config: ModelConfig) -> Any:
  """The params tree (any nesting, boxed or not) with every leaf replaced by TRAINABLE/FROZEN."""
  names = frozen_names(config)
  def label(path, _):
    keys = {getattr(entry, 'key', None) for entry in path}
    return FROZEN if keys & names else TRAINABLE
  return jax.tree_util.tree_map_with_path(label, params)


def freeze_lower_layers(optimizer: optax.GradientTransformation,
                        config: ModelConfig) -> optax.GradientTransformation:
  """`optimizer` for the trainable parameters, zero updates (bit-identical values) for the frozen
  ones; `optimizer` itself when the config freezes nothing."""
  if not frozen_names(config):
    return optimizer
  return optax.multi_transform({TRAINABLE: optimizer, FROZEN: optax.set_to_zero()},
                               lambda params: parameter_labels(params, config))
