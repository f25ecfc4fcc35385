"""The token mixer's matmul (layers/mixing.py `mix`, hand-written backward pass) against the
definition out[b, o, c] = sum_i A[o, i] h[b, i, c]: values and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from melodi_jax.layers.mixing import mix


@pytest.mark.parametrize('lanes', [1, 3])
def test_mix_equals_the_definition(lanes):
  rng = np.random.default_rng(lanes)
  weights = jnp.asarray(rng.normal(size=(5, 7)), jnp.float32)
  h = jnp.asarray(rng.normal(size=(lanes, 7, 4)), jnp.float32)
  probe = jnp.asarray(rng.normal(size=(lanes, 5, 4)), jnp.float32)

  def definition(a, x):
    return jnp.stack([a @ x[b] for b in range(x.shape[0])])

  np.testing.assert_allclose(mix(weights, h), definition(weights, h), rtol=1e-6, atol=1e-6)
  got = jax.grad(lambda a, x: jnp.sum(mix(a, x) * probe), argnums=(0, 1))(weights, h)
  want = jax.grad(lambda a, x: jnp.sum(definition(a, x) * probe), argnums=(0, 1))(weights, h)
  for name, a, b in zip(('weights', 'h'), got, want):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=name)
