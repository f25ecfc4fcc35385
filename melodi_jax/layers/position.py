"""T5-style relative position bias for causal attention: a learned scalar per head and bucket.

The bias is `scale` times a learned table (initialised N(0, 0.02)). With Adam-type optimizers a
parameter moves about one learning rate per step whatever its gradient, so an unscaled table
needs thousands of steps before a head can aim sharply at one offset (a previous-token head wants
a bias ~5 above its neighbours): the copy (induction) circuit then forms late, and attention stays
near uniform over the visible keys. Scaling the table by 10 made a small Transformer-XL form a
copy circuit at step ~400 instead of ~1,900 (results/copy_probe/README.md).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def relative_position_bucket(relative_position: np.ndarray, num_buckets: int,
                             max_distance: int) -> np.ndarray:
  """Buckets `key_pos - query_pos` for causal attention (only the past gets distinct buckets).

  Half the buckets are exact distances 0 .. num_buckets/2 - 1; the rest grow logarithmically up
  to `max_distance`, beyond which everything shares the last bucket. Future keys (positive
  relative positions, masked anyway) map to bucket 0.
  """
  distance = np.maximum(-np.asarray(relative_position), 0)
  exact = num_buckets // 2
  log_ratio = np.log(np.maximum(distance, 1) / exact) / np.log(max_distance / exact)
  large = exact + (log_ratio * (num_buckets - exact)).astype(np.int32)
  large = np.minimum(large, num_buckets - 1)
  return np.where(distance < exact, distance, large).astype(np.int32)


class RelativePositionBias(nn.Module):
  """Maps (query, key) positions to an additive attention bias."""
  num_heads: int
  num_buckets: int = 32
  max_distance: int = 128
  scale: float = 1.0          # bias = scale * table

  @nn.compact
  def __call__(self, query_positions: np.ndarray, key_positions: np.ndarray,
               query_index: jax.Array | None = None) -> jax.Array:
    """int[Tq], int[Tk] (static numpy) -> float32[1, H, Tq, Tk].

    query_index (int32[], traced; decoding): only that query's row -> float32[1, H, 1, Tk].
    """
    buckets = relative_position_bucket(
        key_positions[None, :] - query_positions[:, None], self.num_buckets, self.max_distance)
    if query_index is not None:
      buckets = jnp.asarray(buckets)[query_index][None]
    table = self.param('table', nn.initializers.normal(0.02), (self.num_buckets, self.num_heads),
                       jnp.float32)
    # Gathered from the [H, buckets] table so that the bias comes out [H, Tq, Tk] (no transpose).
    return jnp.take((table * self.scale).T, jnp.asarray(buckets), axis=1)[None]
