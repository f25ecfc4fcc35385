"""Linear token mixing: a learned map over the sequence axis, shared across channels.

MELODI uses three: M-up (window + summaries -> next layer's summaries), M-right (-> this layer's
short-term memory for the next window) and the long-term increment mixer.
"""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from melodi_jax.layers.norms import RMSNorm


class TokenMixer(nn.Module):
  """out[b, o, c] = sum_i A[o, i] * h[b, i, c] + bias[o, c] (+ residual[b, o, c]).

  `inputs` are concatenated along the sequence axis after an RMS norm each (when `normalize`).
  `residual`, when given, must have `output_length` tokens and is added unnormalised.
  """
  output_length: int
  normalize: bool = True
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, inputs: Sequence[jax.Array], residual: jax.Array | None = None) -> jax.Array:
    """inputs: [B, n_i, d] each; residual: [B, output_length, d] or None -> [B, output_length, d]."""
    if self.normalize:
      inputs = [RMSNorm(dtype=self.dtype, name=f'norm_{i}')(x) for i, x in enumerate(inputs)]
    h = jnp.concatenate([x.astype(self.dtype) for x in inputs], axis=1)
    n, d = h.shape[1], h.shape[2]
    weights = self.param('weights', nn.initializers.normal(n ** -0.5), (self.output_length, n),
                         jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (self.output_length, d), jnp.float32)
    out = jnp.einsum('oi,bid->bod', weights.astype(self.dtype), h) + bias.astype(self.dtype)
    if residual is not None:
      assert residual.shape[1] == self.output_length, (residual.shape, self.output_length)
      out = out + residual.astype(self.dtype)
    return out
