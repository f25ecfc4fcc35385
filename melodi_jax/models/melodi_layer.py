"""The MELODI layer: self-attention over [short-term memory, window, summaries], FFN, mixers.

With every memory switched off (S = M = L = 0) it is a plain pre-norm transformer layer whose
attention stays inside the window, which is what the vanilla baseline stacks.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from melodi_jax.layers.attention import Attention, WindowCache
from melodi_jax.layers.mixing import TokenMixer
from melodi_jax.memory import long_term, short_term
from melodi_jax.models.block import attention_and_ffn
from melodi_jax.models.config import ModelConfig, WindowExtra

SUMMARIES = 'summaries'  # key of the summary tokens [B, S, d] in the per-window `extras` dict


def summary_table(summary_tokens: int) -> tuple[WindowExtra, ...]:
  """The learned [S, d] summary tokens every window starts from at layer 0 (none when S = 0)."""
  if not summary_tokens:
    return ()
  return (WindowExtra(SUMMARIES, 'summary_tokens', summary_tokens, nn.initializers.normal(1.0)),)


@dataclasses.dataclass(frozen=True)
class MelodiLayerOptions:
  """What one layer carries. summaries_up: 'mix' (M-up), 'pass' (unmixed), 'none' (top layer)."""
  summary_tokens: int = 0       # S: queries after the window, passed up the layers
  short_term_slots: int = 0     # M: memory tokens passed to this layer's next window
  long_term_slots: int = 0      # L: FIFO of key/value slots (0: not a long-term layer)
  long_term_increment: int = 0  # I: slots appended per window
  summaries_up: str = 'none'

  def module(self, config: ModelConfig, name: str) -> nn.Module:
    return MelodiLayer(config, self, name=name)

  def fifo_increments(self) -> dict:
    """{part: {leaf: I}} for the memory leaves that shift by I slots per window."""
    if not self.long_term_slots:
      return {}
    return {'long_term': {leaf: self.long_term_increment for leaf in long_term.FIFO_LEAVES}}

  def initial_memory(self, config: ModelConfig, batch_size: int) -> dict:
    memory = {}
    if self.short_term_slots:
      memory['short_term'] = short_term.initial_state(
          batch_size, self.short_term_slots, config.model_dim, config.memory_dtype)
    if self.long_term_slots:
      memory['long_term'] = long_term.initial_state(
          batch_size, self.long_term_slots, config.num_heads, config.head_dim,
          config.memory_dtype)
    return memory


class MelodiLayer(nn.Module):
  """One layer for one window. Summaries sit after the window in position space."""
  config: ModelConfig
  options: MelodiLayerOptions

  @nn.compact
  def __call__(self, x: jax.Array, extras: dict, memory: dict,
               deterministic: bool,
               cache: WindowCache | None = None) -> tuple[jax.Array, dict, dict | WindowCache]:
    """x: [B, W, d]; extras[SUMMARIES]: [B, S, d] (when S > 0); memory: this layer's part.

    Returns (tokens [B, W, d], extras for the next layer, memory for the next window).
    With `cache` (decoding one token x [B, 1, d]): no summaries (no token attends to them) and
    no memory writes; returns (token [B, 1, d], extras, the updated cache).
    """
    config, options = self.config, self.options
    dtype = config.dtype
    window = x.shape[1]
    summaries = extras[SUMMARIES] if options.summary_tokens and cache is None else None
    h = x if summaries is None else jnp.concatenate([x, summaries.astype(x.dtype)], axis=1)

    attention = Attention(**config.attention_kwargs(), cross_gate=bool(options.long_term_slots),
                          name='attention')
    groups = [short_term.read(attention, memory['short_term'])] if options.short_term_slots else []
    cross = long_term.read(memory['long_term']) if options.long_term_slots else None
    h, attended = attention_and_ffn(config, attention, h, np.arange(h.shape[1]), groups, cross,
                                    deterministic=deterministic, cache=cache)
    tokens = h[:, :window]
    if cache is not None:
      return tokens, extras, cache._replace(keys=attended.keys, values=attended.values)
    summaries = h[:, window:] if options.summary_tokens else None

    new_memory = {}
    if options.short_term_slots:
      new_memory['short_term'] = short_term.ShortTermWriter(
          options.short_term_slots, dtype, config.memory_dtype, name='short_term_mixer')(
              tokens, summaries)
    if options.long_term_slots:
      increment = TokenMixer(options.long_term_increment, normalize=False, dtype=dtype,
                             name='long_term_mixer')(_present(tokens, summaries))
      new_memory['long_term'] = long_term.write(attention, memory['long_term'], increment)

    extras = dict(extras)
    extras.pop(SUMMARIES, None)
    if options.summaries_up == 'mix':
      extras[SUMMARIES] = TokenMixer(options.summary_tokens, dtype=dtype, name='summary_mixer')(
          _present(tokens, summaries), residual=summaries)
    elif options.summaries_up == 'pass':
      extras[SUMMARIES] = summaries
    return tokens, extras, new_memory


def _present(*arrays):
  return [a for a in arrays if a is not None]
