"""Stack plans: gin-configurable choices of which memory each layer carries.

A plan returns one options object per layer (see models/config.py `LayerOptions`); the decoder
builds the layers from them. To add a memory kind, write its layer + options and a plan here.
"""

import dataclasses

import gin

from melodi_jax.errors import UserError
from melodi_jax.models.config import ModelConfig, WindowExtra
from melodi_jax.models.melodi_layer import MelodiLayerOptions, summary_table


@gin.configurable
@dataclasses.dataclass(frozen=True)
class MelodiStack:
  """MELODI: short-term memory in every layer, long-term memory in `long_term_layers`."""
  summary_tokens: int = 64             # S (0 disables summaries)
  short_term_slots: int = 64           # M (0: the long-term-only ablation)
  long_term_slots: int = 4096          # L
  long_term_increment: int = 32        # I
  long_term_layers: tuple = (6,)       # empty: the short-term-only ablation
  mix_summaries: bool = True           # False: summaries pass up unmixed (ablation of M-up)

  def window_extras(self, config: ModelConfig) -> tuple[WindowExtra, ...]:
    del config
    return summary_table(self.summary_tokens)

  def layers(self, config: ModelConfig) -> tuple[MelodiLayerOptions, ...]:
    self._validate(config)
    # Summaries matter only to a layer that writes memory from them (M-right, the long-term
    # increment) or passes them up to one: no token attends to them (they follow the window).
    # Above the last such layer they would be dead compute and the M-up mixer feeding them would
    # get no gradient (the long-term-only ablation's top layers), so they stop there.
    last_writer = max((index for index in range(config.num_layers)
                       if self.short_term_slots or index in self.long_term_layers), default=-1)
    plan = []
    for index in range(config.num_layers):
      long = index in self.long_term_layers
      summary_tokens = self.summary_tokens if index <= last_writer else 0
      if not summary_tokens or index == last_writer:
        up = 'none'
      else:
        up = 'mix' if self.mix_summaries else 'pass'
      plan.append(MelodiLayerOptions(
          summary_tokens=summary_tokens, short_term_slots=self.short_term_slots,
          long_term_slots=self.long_term_slots if long else 0,
          long_term_increment=self.long_term_increment if long else 0, summaries_up=up))
    return tuple(plan)

  def _validate(self, config: ModelConfig) -> None:
    if min(self.summary_tokens, self.short_term_slots) < 0:
      raise UserError('MelodiStack.summary_tokens and short_term_slots must be >= 0')
    if self.summary_tokens and not self.short_term_slots and not self.long_term_layers:
      raise UserError('MelodiStack.summary_tokens > 0 with short_term_slots = 0 and no '
                      'long_term_layers: no memory is written from the summaries; set '
                      'summary_tokens = 0 (or use a memory)')
    for index in self.long_term_layers:
      if not 0 <= index < config.num_layers:
        raise UserError(f'MelodiStack.long_term_layers has {index}, outside 0..'
                        f'{config.num_layers - 1} (ModelConfig.num_layers)')
    if self.long_term_layers:
      if self.long_term_increment <= 0:
        raise UserError('MelodiStack.long_term_increment (I) must be > 0 with a long-term layer')
      if self.long_term_slots < self.long_term_increment:
        raise UserError(f'MelodiStack.long_term_slots (L = {self.long_term_slots}) must be at '
                        f'least long_term_increment (I = {self.long_term_increment})')
      if self.long_term_slots % self.long_term_increment:
        raise UserError(f'MelodiStack.long_term_slots (L = {self.long_term_slots}) must be a '
                        f'multiple of long_term_increment (I = {self.long_term_increment}) so '
                        'the FIFO drops whole windows')


@gin.configurable
@dataclasses.dataclass(frozen=True)
class VanillaStack:
  """No memory: attention stays inside each window (the floor every memory must beat)."""
  summary_tokens: int = 0  # S of a summary table no vanilla layer reads (run configs bind 0)

  def window_extras(self, config: ModelConfig) -> tuple[WindowExtra, ...]:
    del config
    return summary_table(self.summary_tokens)

  def layers(self, config: ModelConfig) -> tuple[MelodiLayerOptions, ...]:
    return tuple(MelodiLayerOptions() for _ in range(config.num_layers))
