"""Linear token mixing: a learned map over the sequence axis, shared across channels.

MELODI uses three: M-up (window + summaries -> next layer's summaries), M-right (-> this layer's
short-term memory for the next window) and the long-term increment mixer.
"""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from melodi_jax.layers.attention_kernel import sum_lanes
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
    out = mix(weights.astype(self.dtype), h) + bias.astype(self.dtype)
    if residual is not None:
      assert residual.shape[1] == self.output_length, (residual.shape, self.output_length)
      out = out + residual.astype(self.dtype)
    return out


@jax.custom_vjp
def mix(weights: jax.Array, h: jax.Array) -> jax.Array:
  """weights [O, N], h [B, N, d] -> [B, O, d]: out[b] = weights @ h[b].

  As a dot batched over lanes (the weights broadcast, [O, N] each), every product is a plain
  row-major matmul: as one dot contracting h's middle axis, XLA:CPU transposed h (and the output
  gradient) to [B x d, N] first, an elementwise transpose fused with the inputs' norms. The
  weight gradient sums the lanes' products with adds (`attention_kernel.sum_lanes`: a reduce
  over the leading axis is slow on XLA:CPU).
  """
  return _mix(weights, h)


def _mix(weights, h):
  return jnp.einsum('boi,bid->bod', jnp.broadcast_to(weights, (h.shape[0],) + weights.shape), h)


def _mix_fwd(weights, h):
  return _mix(weights, h), (weights, h)


def _mix_bwd(residuals, d_out):
  weights, h = residuals
  d_h = _mix(weights.T, d_out)                                             # [B, N, d]
  d_weights = sum_lanes(jnp.einsum('bod,bid->boi', d_out, h))[0]          # [O, N]
  return d_weights.astype(weights.dtype), d_h.astype(h.dtype)


mix.defvjp(_mix_fwd, _mix_bwd)
