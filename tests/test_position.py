"""The relative position bias: buckets, and the scale that lets its table learn faster."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from melodi_jax.layers.position import RelativePositionBias, relative_position_bucket
from melodi_jax.errors import UserError
from melodi_jax.models.config import ModelConfig

QUERIES, KEYS = np.arange(8), np.arange(-8, 8)


def test_buckets_are_exact_near_and_shared_far():
  distance = -np.arange(0, 300)
  buckets = relative_position_bucket(distance, num_buckets=32, max_distance=128)
  np.testing.assert_array_equal(buckets[:16], np.arange(16))    # exact distances 0..15
  assert np.all(np.diff(buckets) >= 0) and buckets[-1] == 31     # monotone, last bucket far
  assert relative_position_bucket(np.array([5]), 32, 128)[0] == 0  # future keys: bucket 0


def test_scale_multiplies_the_bias_and_its_table_gradient():
  """bias = scale * table: the same table gives scale times the bias, and the table's gradient is
  scale times larger (so Adam-type updates move the bias scale times faster)."""
  plain, scaled = RelativePositionBias(2), RelativePositionBias(2, scale=10.0)
  params = plain.init(jax.random.key(0), QUERIES, KEYS)
  np.testing.assert_allclose(scaled.apply(params, QUERIES, KEYS),
                             10.0 * plain.apply(params, QUERIES, KEYS), rtol=1e-6)
  weights = jax.random.normal(jax.random.key(1), (1, 2, len(QUERIES), len(KEYS)))

  def grad(module):
    return jax.grad(lambda p: jnp.sum(module.apply(p, QUERIES, KEYS) * weights))(params)

  np.testing.assert_allclose(grad(scaled)['params']['table'],
                             10.0 * grad(plain)['params']['table'], rtol=1e-5)


@pytest.mark.parametrize('scale', [0.0, -1.0])
def test_non_positive_scale_is_rejected(scale):
  from melodi_jax.models.stacks import VanillaStack  # pylint: disable=g-import-not-at-top
  config = ModelConfig(num_layers=1, model_dim=8, num_heads=1, head_dim=8, mlp_dim=8,
                       window_length=4, stack=VanillaStack(), position_bias_scale=scale)
  with pytest.raises(UserError, match='position_bias_scale'):
    config.validate()
