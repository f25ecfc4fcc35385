"""The gin-configured model hyperparameters shared by every layer kind.

Which layers carry which memory is decided by `ModelConfig.stack`, a stack plan (e.g.
`MelodiStack`, `VanillaStack`) that returns one options object per layer; see models/stacks.py.
"""

import dataclasses
from typing import Any, Callable, Protocol

import gin
import jax.numpy as jnp

from melodi_jax.errors import UserError


class LayerOptions(Protocol):
  """What a stack plan returns per layer: it builds the layer and its initial memory."""

  def module(self, config: 'ModelConfig', name: str) -> Any:
    """The flax module of this layer: __call__(x, extras, memory, deterministic)."""

  def initial_memory(self, config: 'ModelConfig', batch_size: int) -> dict:
    """This layer's part of the memory pytree at a document start; every leaf [B, ...]."""


@dataclasses.dataclass(frozen=True)
class WindowExtra:
  """A learned table float32[rows, d] every window starts from: the decoder hands it to the first
  layer in the per-window `extras` dict, [B, rows, d] in the compute dtype (e.g. MELODI's summary
  tokens)."""
  key: str        # its key in `extras`
  param: str      # the parameter's name, under the scanned stack
  rows: int
  init: Callable  # flax initializer of the table


class StackPlan(Protocol):
  """Which layers carry what. A plan may also define `window_extras(config) ->
  tuple[WindowExtra, ...]`, the learned inputs every window starts from (most plans have none)."""

  def layers(self, config: 'ModelConfig') -> tuple[LayerOptions, ...]:
    """One options object per layer, bottom to top."""


@gin.configurable
@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Sizes and switches of a window-recurrent decoder. Defaults: meliad's base MELODI config."""
  vocab_size: int = 256             # bytes
  num_layers: int = 12
  model_dim: int = 1024             # d
  num_heads: int = 8                # H
  head_dim: int = 128               # Dh
  mlp_dim: int = 4096
  activation: str = 'relu'
  window_length: int = 512          # W: tokens per window; a segment holds N = T / W windows
  dropout_rate: float = 0.05        # residual and attention-probability dropout (train=True only)
  normalize_qk: bool = False        # unit-norm keys/queries with a learned per-head scale
  position_buckets: int = 32        # T5 relative position bias buckets ...
  position_max_distance: int = 128  # ... and the distance where the last bucket starts
  position_bias_scale: float = 10.0  # bias = scale * learned table: lets it move 10x faster
                                     # (layers/position.py)
  tie_embeddings: bool = False      # logits use the token embedding table
  dtype: str = 'bfloat16'           # compute dtype; parameters stay float32
  memory_dtype: str = 'float32'     # dtype of the carried memory pytree
  remat: bool = False               # recompute windows in the backward pass (models/recompute.py)
  remat_saves: str = 'nothing'      # with remat, what each window keeps for the backward pass:
                                    # 'nothing' (all recomputed), 'dots' (its weight-matmul
                                    # outputs; the rest recomputed) or 'all_dots' (attention's
                                    # matmuls too); models/decoder.py, models/recompute.py
  remat_budget_mib: float = 0.0     # > 0: with remat_saves other than 'nothing', recompute
                                    # whole windows instead when what all windows would keep
                                    # exceeds this many MiB (0: no limit)
  attention_query_blocks: int = 4   # self-attention skips the keys masked for a whole block of
                                    # queries, in up to this many blocks (1: one block)
  stack: Any = None                 # a StackPlan, e.g. @MelodiStack() in gin

  def layer_options(self) -> tuple[LayerOptions, ...]:
    if self.stack is None:
      raise UserError('ModelConfig.stack is not set: bind it in gin, e.g. '
                      'ModelConfig.stack = @MelodiStack() (see configs/models/).')
    options = tuple(self.stack.layers(self))
    if len(options) != self.num_layers:
      raise UserError(f'the stack plan made {len(options)} layers for '
                      f'ModelConfig.num_layers = {self.num_layers}')
    return options

  def window_extras(self) -> tuple[WindowExtra, ...]:
    """The stack plan's learned per-window inputs (`window_extras`; none when it has no such
    method)."""
    window_extras = getattr(self.stack, 'window_extras', None)
    return tuple(window_extras(self)) if window_extras else ()

  def for_training(self) -> 'ModelConfig':
    """The config the trainer's train step runs: the stack plan's `for_training()` where it
    has one (a memory sized for training documents, e.g. `MemorizingStack.train_memory_slots`);
    else this config. Parameters are the same either way; evaluation uses this config."""
    for_training = getattr(self.stack, 'for_training', None)
    stack = for_training() if for_training else self.stack
    return self if stack == self.stack else dataclasses.replace(self, stack=stack)

  def attention_kwargs(self) -> dict:
    """Keyword arguments of layers.attention.Attention for this model."""
    return dict(model_dim=self.model_dim, num_heads=self.num_heads, head_dim=self.head_dim,
                dropout_rate=self.dropout_rate, normalize_qk=self.normalize_qk,
                position_buckets=self.position_buckets,
                position_max_distance=self.position_max_distance,
                position_bias_scale=self.position_bias_scale,
                query_blocks=self.attention_query_blocks, dtype=self.dtype)

  def validate(self) -> None:
    """Raises UserError naming the gin parameter that cannot work."""
    for field in dataclasses.fields(self):
      value = getattr(self, field.name)
      expected = {int: (int,), float: (int, float), bool: (bool,), str: (str,)}.get(field.type)
      if expected and (not isinstance(value, expected) or
                       (field.type is not bool and isinstance(value, bool))):
        raise UserError(f'ModelConfig.{field.name} = {value!r} must be a {field.type.__name__}')
    checks = [
        (self.vocab_size > 0, 'ModelConfig.vocab_size must be positive'),
        (self.num_layers > 0, 'ModelConfig.num_layers must be positive'),
        (self.window_length > 0, 'ModelConfig.window_length must be positive'),
        (self.model_dim > 0 and self.num_heads > 0 and self.head_dim > 0,
         'ModelConfig.model_dim, num_heads and head_dim must be positive'),
        (0.0 <= self.dropout_rate < 1.0, 'ModelConfig.dropout_rate must be in [0, 1)'),
        (self.position_buckets >= 2 and self.position_max_distance > self.position_buckets // 2,
         'ModelConfig.position_max_distance must exceed position_buckets / 2'),
        (self.position_bias_scale > 0, 'ModelConfig.position_bias_scale must be positive'),
        (self.attention_query_blocks >= 1, 'ModelConfig.attention_query_blocks must be >= 1'),
        (self.remat_saves in ('nothing', 'dots', 'all_dots'),
         f"ModelConfig.remat_saves = {self.remat_saves!r}: use 'nothing', 'dots' or 'all_dots'"),
        (self.remat_budget_mib >= 0, 'ModelConfig.remat_budget_mib must be >= 0 (0: no limit)'),
        (self.remat or self.remat_saves == 'nothing',
         f'ModelConfig.remat_saves = {self.remat_saves!r} takes effect only with '
         'ModelConfig.remat = True: bind both'),
    ]
    for ok, message in checks:
      if not ok:
        raise UserError(message)
    for name in ('dtype', 'memory_dtype'):
      try:
        jnp.dtype(getattr(self, name))
      except TypeError as e:
        raise UserError(f'ModelConfig.{name} = {getattr(self, name)!r} is not a dtype') from e
    self.layer_options()
