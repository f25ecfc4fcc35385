"""The layer skeleton every layer kind shares: pre-norm attention and FFN, each with a residual."""

from typing import Sequence

import jax
import numpy as np

from melodi_jax.layers.attention import Attention, AttentionOutput, KeyGroup, WindowCache
from melodi_jax.layers.feedforward import FeedForward
from melodi_jax.models.config import ModelConfig


def attention_and_ffn(config: ModelConfig, attention: Attention, x: jax.Array,
                      positions: np.ndarray, groups: Sequence[KeyGroup] = (),
                      cross: KeyGroup | None = None, span: int | None = None,
                      deterministic: bool = True,
                      cache: WindowCache | None = None) -> tuple[jax.Array, AttentionOutput]:
  """x [B, T, d] -> (x + attn, then + FFN [B, T, d], the attention's output with its own K/V).

  Call it from a layer's compact __call__: the FFN becomes that layer's submodule 'mlp'.
  With `cache` (decoding), x is one token [B, 1, d] and the output's K/V the updated cache.
  """
  attended = attention(x, positions, groups, cross, span, deterministic=deterministic,
                       cache=cache)
  h = x + attended.output
  h = h + FeedForward(config.mlp_dim, config.activation, config.dropout_rate,
                      config.dtype, name='mlp')(h, deterministic)
  return h, attended
