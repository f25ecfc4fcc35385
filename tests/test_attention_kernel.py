"""The blocked attention kernel (layers/attention_kernel.py) against softmax attention written
from its definition: outputs and gradients (queries, keys, values, biases), with query blocks,
empty memory slots, a query with no allowed key, shared and per-lane biases, and blocks that keep
their probabilities or recompute them in the backward pass."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from melodi_jax.layers.attention import causal_mask, query_blocks
from melodi_jax.layers.attention_kernel import RECOMPUTE_KEYS, blocked_attention, sum_lanes

B, H, DH = 2, 3, 8


def reference(query, keys, values, mask, bias):
  """softmax over the allowed keys of q.k + bias; a query with no allowed key outputs zero."""
  logits = jnp.einsum('bqhd,bkhd->bhqk', query, keys) + (0.0 if bias is None else bias)
  mask = jnp.broadcast_to(mask, logits.shape)
  top = jax.lax.stop_gradient(jnp.max(jnp.where(mask, logits, -jnp.inf), -1, keepdims=True))
  weights = jnp.where(mask, jnp.exp(logits - jnp.where(jnp.isfinite(top), top, 0.0)), 0.0)
  total = jnp.sum(weights, -1, keepdims=True)
  probs = weights / jnp.where(total > 0, total, 1.0)
  return jnp.einsum('bhqk,bkhd->bqhd', probs, values)


def _case(num_queries, num_memory, span, rng):
  normal = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
  query, keys, values = (normal(B, num_queries, H, DH), normal(B, num_memory + num_queries, H, DH),
                         normal(B, num_memory + num_queries, H, DH))
  positions = np.arange(num_queries)
  key_positions = np.concatenate([np.arange(-num_memory, 0), positions])
  static = causal_mask(positions, key_positions, span)
  # Lane 1: the first memory slots are empty.
  valid = np.ones((B, num_memory + num_queries), bool)
  valid[1, :num_memory - 2] = False
  return query, keys, values, static, jnp.asarray(static)[None, None] & valid[:, None, None]


def _check(query, keys, values, mask, bias, blocks, recompute_keys=RECOMPUTE_KEYS):
  """Kernel vs reference: outputs, and gradients of a fixed random projection of the output."""
  weights = jnp.asarray(np.random.default_rng(7).normal(size=query.shape), jnp.float32)

  def kernel_loss(q, k, v, bias):
    biases = [None if bias is None else bias[:, :, r0:r1, c0:c1] for r0, r1, c0, c1 in blocks]
    return jnp.sum(blocked_attention(q, k, v, mask, biases, blocks, recompute_keys) * weights)

  def reference_loss(q, k, v, bias):
    return jnp.sum(reference(q, k, v, mask, bias) * weights)

  args = (query, keys, values, bias)
  argnums = (0, 1, 2) if bias is None else (0, 1, 2, 3)
  got = jax.jit(jax.value_and_grad(kernel_loss, argnums))(*args)
  want = jax.jit(jax.value_and_grad(reference_loss, argnums))(*args)
  biases = [None if bias is None else bias[:, :, r0:r1, c0:c1] for r0, r1, c0, c1 in blocks]
  np.testing.assert_allclose(blocked_attention(query, keys, values, mask, biases, blocks),
                             reference(query, keys, values, mask, bias), atol=1e-5)
  np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
  for name, a, b in zip(('query', 'keys', 'values', 'bias'), got[1], want[1]):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4, err_msg=name)


@pytest.mark.parametrize('span,lanes_share_bias', [(None, True), (24, True), (None, False)],
                         ids=['causal', 'sliding_window', 'bias_per_lane'])
def test_blocked_self_attention_equals_the_definition(span, lanes_share_bias):
  rng = np.random.default_rng(0)
  query, keys, values, static, mask = _case(64, 16, span, rng)
  blocks = query_blocks(static, 4, min_rows=8)
  assert len(blocks) == 4 and any(c1 - c0 < static.shape[1] for _, _, c0, c1 in blocks)
  bias = jnp.asarray(rng.normal(size=(1 if lanes_share_bias else B, H) + static.shape),
                     jnp.float32)
  _check(query, keys, values, mask, bias, blocks)


@pytest.mark.parametrize('recompute_keys', [RECOMPUTE_KEYS, 1], ids=['keeps', 'recomputes'])
def test_blocked_self_attention_without_bias(recompute_keys):
  """Causal blocks without a bias (with recompute_keys=1 every block recomputes its
  probabilities, transposed, from the queries, keys and its rows' log-sum-exp)."""
  rng = np.random.default_rng(2)
  query, keys, values, static, mask = _case(64, 16, None, rng)
  blocks = query_blocks(static, 4, min_rows=8)
  _check(query, keys, values, mask, None, blocks, recompute_keys)


@pytest.mark.parametrize('recompute_keys', [RECOMPUTE_KEYS, 1], ids=['keeps', 'recomputes'])
def test_cross_attention_without_bias_and_an_empty_lane(recompute_keys):
  """One block over a memory without positions; lane 1 has no valid key at all (zero output)."""
  rng = np.random.default_rng(1)
  normal = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
  query, keys, values = normal(B, 12, H, DH), normal(B, 20, H, DH), normal(B, 20, H, DH)
  valid = np.ones((B, 20), bool)
  valid[0, ::3] = False
  valid[1] = False
  mask = jnp.asarray(valid)[:, None, None, :]
  _check(query, keys, values, mask, None, [(0, 12, 0, 20)], recompute_keys)
  out = blocked_attention(query, keys, values, mask, [None], [(0, 12, 0, 20)], recompute_keys)
  np.testing.assert_array_equal(out[1], 0.0)


@pytest.mark.parametrize('recompute_keys', [RECOMPUTE_KEYS, 1], ids=['keeps', 'recomputes'])
def test_what_a_checkpointed_block_keeps(recompute_keys, capsys):
  """Under the remat policies (models/decoder.py SAVED), a block that keeps its probabilities
  keeps a [B, H, rows, keys] table; a recomputing block keeps only its rows' log-sum-exp (named
  for the policies), not the QK^T it was computed from."""
  from melodi_jax.models.decoder import SAVED  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(3)
  normal = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
  query, keys, values = normal(B, 12, H, DH), normal(B, 20, H, DH), normal(B, 20, H, DH)
  mask = jnp.ones((B, 1, 1, 20), bool)

  def loss(q, k, v):
    return jnp.sum(blocked_attention(q, k, v, mask, [None], [(0, 12, 0, 20)], recompute_keys) ** 2)
  for saves in ('dots', 'all_dots'):
    jax.ad_checkpoint.print_saved_residuals(jax.checkpoint(loss, policy=SAVED[saves]),
                                            query, keys, values)
    kept = capsys.readouterr().out
    table, log_sum_exp = f'f32[{B},{H},12,20]', f'f32[{B},{H},12,1]'
    if recompute_keys == 1:
      assert table not in kept and log_sum_exp in kept, (saves, kept)
    elif saves == 'all_dots':
      assert table in kept, (saves, kept)


@pytest.mark.parametrize('backend', ['cpu', 'gpu'])
def test_sum_lanes_is_the_sum_over_lanes(backend, monkeypatch):
  """Adds on CPU, a reduce_sum elsewhere (the backend faked): the same sum either way."""
  monkeypatch.setattr(jax, 'default_backend', lambda: backend)
  x = jnp.asarray(np.random.default_rng(4).normal(size=(5, 3, 2)), jnp.float32)
  np.testing.assert_allclose(sum_lanes(x), np.sum(np.asarray(x), axis=0, keepdims=True),
                             rtol=1e-6, atol=1e-6)
