"""Pre-norm position-wise feed-forward block."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from melodi_jax.layers import axes, dense_grad
from melodi_jax.layers.norms import RMSNorm

ACTIVATIONS = {'relu': nn.relu, 'gelu': nn.gelu, 'swish': nn.swish}


class FeedForward(nn.Module):
  """norm -> dense(mlp_dim) -> activation -> dropout -> dense(d) -> dropout (no residual)."""
  mlp_dim: int
  activation: str = 'relu'
  dropout_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
    """x: [B, T, d] -> [B, T, d]."""
    d = x.shape[-1]
    init = nn.initializers.variance_scaling(1.0, 'fan_in', 'truncated_normal')
    # As [B x T, d] rows: XLA:CPU then computes the weight gradients without transposing copies.
    h = RMSNorm(dtype=self.dtype, name='norm')(x).reshape(-1, d)
    h = nn.Dense(self.mlp_dim, use_bias=False, dtype=self.dtype, name='wi',
                 kernel_init=nn.with_logical_partitioning(init, (axes.EMBED, axes.MLP)))(h)
    h = ACTIVATIONS[self.activation](h)
    h = nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)
    h = nn.Dense(d, use_bias=False, dtype=self.dtype, name='wo', dot_general=dense_grad.dot_general,
                 kernel_init=nn.with_logical_partitioning(init, (axes.MLP, axes.EMBED)))(h)
    return nn.Dropout(self.dropout_rate)(h, deterministic=deterministic).reshape(x.shape)
