"""RMS normalisation (no mean subtraction, learned per-channel scale)."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from melodi_jax.layers import axes


class RMSNorm(nn.Module):
  """Normalises the last axis by its root mean square; computes in float32."""
  epsilon: float = 1e-6
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: [..., d] -> [..., d] in `dtype`."""
    scale = self.param('scale', nn.with_logical_partitioning(nn.initializers.ones, (axes.EMBED,)),
                       (x.shape[-1],), jnp.float32)
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.epsilon)
    return (x32 * scale).astype(self.dtype)
