"""models/recompute.py: the recomputing window scan equals jax.lax.scan (values and gradients)
and keeps per window only the slots a FIFO gained, not the whole FIFO."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from melodi_jax.models import recompute

B, L, I, D, N = 2, 12, 3, 5, 9   # the FIFO spans 4 windows; N windows wrap it twice


def _window(params, carry, x):
  """A toy memory layer: attend from h to the valid FIFO slots, update h, append I slots."""
  inputs, reset = x
  fresh = {'fifo': jnp.zeros_like(carry['fifo']), 'valid': jnp.zeros_like(carry['valid']),
           'h': jnp.zeros_like(carry['h'])}
  carry = jax.tree.map(lambda old, new: jnp.where(
      reset.reshape((B,) + (1,) * (old.ndim - 1)), new, old), carry, fresh)
  scores = jnp.einsum('bd,bld->bl', carry['h'] @ params['q'], carry['fifo'])
  scores = jnp.where(carry['valid'], scores, -1e30)
  read = jnp.einsum('bl,bld->bd', jax.nn.softmax(scores) * carry['valid'], carry['fifo'])
  h = jnp.tanh(carry['h'] + read + inputs)
  gained = jnp.tanh(jnp.einsum('bd,ide->bie', h, params['w']))
  new = {'fifo': jnp.concatenate([carry['fifo'][:, I:], gained], axis=1),
         'valid': jnp.concatenate([carry['valid'][:, I:], jnp.ones((B, I), bool)], axis=1),
         'h': h}
  return new, h * params['out']


def _setup():
  rng = np.random.RandomState(0)
  params = {'q': jnp.asarray(rng.randn(D, D), jnp.float32),
            'w': jnp.asarray(rng.randn(I, D, D) / 2, jnp.float32),
            'out': jnp.asarray(rng.randn(D), jnp.float32)}
  carry = {'fifo': jnp.asarray(rng.randn(B, L, D), jnp.float32),
           'valid': jnp.asarray(rng.rand(B, L) > 0.3), 'h': jnp.asarray(rng.randn(B, D),
                                                                       jnp.float32)}
  reset = np.zeros((N, B), bool)
  reset[4, 0] = True  # lane 0 starts a new document mid-way; lane 1 never does
  xs = (jnp.asarray(rng.randn(N, B, D), jnp.float32), jnp.asarray(reset))
  increments = tuple(I if path[0].key == 'fifo' else 0 for path, _ in
                     jax.tree_util.tree_flatten_with_path(carry)[0])
  return params, carry, xs, increments


def _loss(scan):
  def fn(params, fifo, h, inputs, carry, reset):
    final, ys = scan(params, dict(carry, fifo=fifo, h=h), (inputs, reset))
    return jnp.sum(ys ** 2) + jnp.sum(jnp.sin(final['fifo'])) + jnp.sum(final['h'])
  return jax.jit(jax.value_and_grad(fn, argnums=(0, 1, 2, 3)))


@pytest.mark.parametrize('policy', [None, jax.checkpoint_policies.dots_saveable,
                                    jax.checkpoint_policies.everything_saveable])
def test_values_and_gradients_equal_a_plain_scan(policy):
  """Recomputing each window (policy None) or keeping what a checkpoint policy saves."""
  params, carry, xs, increments = _setup()
  plain = lambda p, c, x: jax.lax.scan(lambda c, x: _window(p, c, x), c, x)
  rebuilt = lambda p, c, x: recompute.window_scan(_window, p, c, x, increments,
                                                   recompute.Saves(policy))
  args = (params, carry['fifo'], carry['h'], xs[0], carry, xs[1])
  want, want_grads = _loss(plain)(*args)
  got, got_grads = _loss(rebuilt)(*args)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert np.abs(np.asarray(want_grads[1])).max() > 0   # the carried-in FIFO matters
  outputs = jax.jit(rebuilt)(params, carry, xs)
  expected = jax.jit(plain)(params, carry, xs)
  for a, b in zip(jax.tree.leaves(outputs), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(a, b)


def test_saves_the_gained_slots_not_the_fifo_per_window():
  params, carry, xs, increments = _setup()
  _, residuals = jax.eval_shape(
      lambda p, c, x: recompute._forward(_window, p, c, x, increments, recompute.Saves()),
      params, carry, xs)
  saved = sum(leaf.size for leaf in jax.tree.leaves(residuals)
              if jnp.issubdtype(leaf.dtype, jnp.floating))
  fifo_once = B * L * D
  per_window = B * I * D + B * D + B * D     # gained slots, h, the window's input
  params_size = sum(leaf.size for leaf in jax.tree.leaves(params))
  assert saved == params_size + fifo_once + N * per_window, saved
  assert saved < N * fifo_once


def test_kept_bytes_is_what_the_forward_pass_keeps_per_window():
  """`kept_bytes` (shapes of one window) x N = the values the scan stacks for the backward pass;
  more for a policy that saves more, nothing beside the inputs without a policy."""
  params, carry, xs, increments = _setup()
  first = jax.tree.map(lambda a: a[0], xs)
  sizes = {}
  for name, policy in (('dots', jax.checkpoint_policies.dots_saveable),
                       ('everything', jax.checkpoint_policies.everything_saveable)):
    sizes[name] = recompute.kept_bytes(_window, params, carry, first, policy)
    _, residuals = jax.eval_shape(lambda p, c, x, policy=policy: recompute._forward(
        _window, p, c, x, increments, recompute.Saves(policy)), params, carry, xs)
    stacked = residuals[-1]
    assert all(leaf.shape[0] == N for leaf in stacked)
    assert sizes[name] * N == sum(leaf.size * leaf.dtype.itemsize for leaf in stacked)
  assert 0 < sizes['dots'] < sizes['everything'], sizes
