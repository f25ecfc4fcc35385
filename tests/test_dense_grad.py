"""layers/dense_grad.py: x @ w with a hand-written backward pass equals autodiff's x @ w."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from melodi_jax.layers import dense_grad


@pytest.mark.parametrize('rows,k,n', [(12, 10, 4), (12, 4, 10), (7, 6, 6)])
def test_values_and_gradients_equal_autodiff(rows, k, n):
  """Tall weights (K > N, the transposed-product branch) and the others."""
  rng = np.random.RandomState(0)
  x = jnp.asarray(rng.randn(rows, k), jnp.float32)
  w = jnp.asarray(rng.randn(k, n), jnp.float32)
  target = jnp.asarray(rng.randn(rows, n), jnp.float32)
  loss = lambda f: jax.jit(jax.value_and_grad(
      lambda x, w: jnp.sum(jnp.sin(f(x, w)) * target), argnums=(0, 1)))
  want, want_grads = loss(lambda x, w: x @ w)(x, w)
  got, got_grads = loss(dense_grad.matmul)(x, w)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  for a, b in zip(got_grads, want_grads):
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_dense_takes_it_as_its_dot_general():
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  x = jnp.asarray(np.random.RandomState(1).randn(5, 8), jnp.float32)
  plain, custom = nn.Dense(3, use_bias=False), nn.Dense(3, use_bias=False,
                                                        dot_general=dense_grad.dot_general)
  params = plain.init(jax.random.PRNGKey(0), x)
  grads = [jax.grad(lambda p, m=m: jnp.sum(m.apply(p, x) ** 2))(params) for m in (plain, custom)]
  np.testing.assert_allclose(grads[1]['params']['kernel'], grads[0]['params']['kernel'],
                             rtol=1e-5)
  with pytest.raises(AssertionError, match=r'takes \[R, K\] x \[K, N\]'):
    custom.apply(params, x[None])
