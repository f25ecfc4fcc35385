"""Transformer-XL: every token sees exactly the W tokens before it, within and across segments."""

import jax
import jax.numpy as jnp
import numpy as np

import zoo

BATCH, WINDOWS = 1, 4
ONE_LAYER = ('ModelConfig.num_layers = 1',)  # deeper stacks see W tokens further back per layer


def test_each_token_sees_exactly_the_w_tokens_before_it():
  """Gradient probe on a one-layer XL model: every position holds a distinct token id, so the
  gradient of a logit at position p with respect to embedding row r is the influence of the
  token at position r. Probed: window starts and a mid-window token, within the first segment
  and in the second segment (reaching back through the carried cache)."""
  model = zoo.build('transformer_xl', ONE_LAYER)
  variables = zoo.params('transformer_xl', ONE_LAYER)
  w = model.window_length
  t = w * WINDOWS
  tokens = jnp.arange(2 * t, dtype=jnp.int32)[None]  # position r holds token id r
  probes = np.array([2 * w, 2 * w + 3, t, t + 5])
  readout = jax.random.normal(jax.random.PRNGKey(1), (model.vocab_size,))

  def probe_logits(embedding):
    params = dict(variables['params'], embed={'embedding': embedding})
    first, memory = model.apply({'params': params}, tokens[:, :t], model.init_memory(BATCH),
                                zoo.doc_starts(BATCH, WINDOWS))
    second, _ = model.apply({'params': params}, tokens[:, t:], memory,
                            zoo.doc_starts(BATCH, WINDOWS, first=False))
    logits = jnp.concatenate([first, second], axis=1)[0]
    return logits[probes] @ readout

  jacobian = jax.jit(jax.jacrev(probe_logits))(variables['params']['embed']['embedding'])
  influence = np.abs(np.asarray(jacobian)).max(axis=-1)  # [probes, vocab = positions]
  for row, p in zip(influence, probes):
    seen = np.flatnonzero(row[:2 * t] > 0)
    np.testing.assert_array_equal(seen, np.arange(p - w, p + 1),
                                  err_msg=f'position {p} must see exactly positions {p - w}..{p}')


def test_paper_config_footprint():
  """Floats kept per lane, counted from the memory pytree: the MELODI paper's 13.6M."""
  assert zoo.floats_per_lane('paper/transformer_xl.gin') == 13 * 512 * 2 * 1024


def test_with_an_empty_cache_it_is_the_windowed_model():
  """Same parameter tree as vanilla, and with every window a document start (empty cache) the
  same logits: the cache's keys are the only thing Transformer-XL adds."""
  txl, vanilla = zoo.build('transformer_xl'), zoo.build('vanilla')
  params = zoo.params('vanilla')
  assert jax.tree.structure(params) == jax.tree.structure(zoo.params('transformer_xl'))
  tokens = zoo.random_tokens(2, WINDOWS * txl.window_length, seed=2)
  every_window = jnp.ones((2, WINDOWS), bool)
  got, _ = zoo.jitted_apply(txl)(params, tokens, txl.init_memory(2), every_window)
  want, _ = zoo.jitted_apply(vanilla)(params, tokens, vanilla.init_memory(2), every_window)
  np.testing.assert_array_equal(got, want)
  # With the cache filled (no document start after window 0) the outputs differ.
  first_only = zoo.doc_starts(2, WINDOWS)
  got, _ = zoo.jitted_apply(txl)(params, tokens, txl.init_memory(2), first_only)
  want, _ = zoo.jitted_apply(vanilla)(params, tokens, vanilla.init_memory(2), first_only)
  assert not np.allclose(got[:, txl.window_length:], want[:, txl.window_length:])
