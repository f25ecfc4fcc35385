"""Memorizing Transformer: exact top-k lookup, ring buffer, no gradient into memory, resets."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zoo
from melodi_jax.layers.attention import dot_product_attention, masked_top_k

BATCH = 2
LAYER = 'layer_01'  # zoo.MEMORIZING puts the memory in layer 1


def _brute_force(query, keys, values, valid, k):
  """numpy: per (lane, query, head) softmax over the k largest allowed scores."""
  b, tq, h, _ = query.shape
  out = np.zeros(query.shape, np.float64)
  for lane in range(b):
    for q in range(tq):
      for head in range(h):
        scores = keys[lane, :, head] @ query[lane, q, head]
        allowed = np.flatnonzero(valid[lane])
        best = allowed[np.argsort(-scores[allowed], kind='stable')[:k]]
        if best.size:
          p = np.exp(scores[best] - scores[best].max())
          out[lane, q, head] = (p / p.sum()) @ values[lane, best, head]
  return out


@pytest.mark.parametrize('approximate', [False, True])
def test_top_k_lookup_equals_brute_force(approximate):
  """Random data with empty slots (lane 1 has fewer filled slots than k); on CPU the approximate
  search is exact, so both options must match numpy."""
  rng = np.random.RandomState(0)
  query, keys, values = (rng.randn(*s).astype(np.float32)
                         for s in ((2, 5, 3, 8), (2, 40, 3, 8), (2, 40, 3, 8)))
  valid = rng.rand(2, 40) < 0.6
  valid[1] = False
  valid[1, [3, 17, 30]] = True
  k = 6
  got = dot_product_attention(jnp.asarray(query), jnp.asarray(keys), jnp.asarray(values),
                              jnp.asarray(valid)[:, None, None, :], top_k=k,
                              approximate=approximate)
  np.testing.assert_allclose(got, _brute_force(query, keys, values, valid, k), atol=1e-5)
  _, index, found = masked_top_k(jnp.asarray(rng.randn(2, 40)), jnp.asarray(valid), k)
  assert found[0].all() and found[1].sum() == 3
  assert set(np.asarray(index[1])[np.asarray(found[1])]) == {3, 17, 30}


def _windows(model, variables, tokens, doc_start):
  """Runs windows one at a time; yields the memory after each."""
  apply = zoo.jitted_apply(model)
  memory, w = model.init_memory(BATCH), model.window_length
  for k in range(tokens.shape[1] // w):
    _, memory = apply(variables, tokens[:, k * w:(k + 1) * w], memory, doc_start[:, k:k + 1])
    yield memory


def test_ring_buffer_overwrites_oldest_entries_and_reset_empties_the_lane():
  """Each window's keys (the layer's own, also in its XL cache) go to the next W slots modulo
  the memory size; lane 0 starts a new document at window 5: afterwards only that window's
  entries are visible in lane 0, lane 1 is untouched."""
  model, variables = zoo.build('memorizing'), zoo.params('memorizing')
  w, slots = model.window_length, model.config.stack.memory_slots
  tokens = zoo.random_tokens(BATCH, 6 * w, seed=11)
  doc_start = zoo.doc_starts(BATCH, 6).at[0, 5].set(True)
  written = []
  for k, memory in enumerate(_windows(model, variables, tokens, doc_start)):
    knn, cache = memory[LAYER]['knn'], memory[LAYER]['xl_cache']
    written.append(np.asarray(cache['keys']))
    if k < 5:
      np.testing.assert_array_equal(knn['valid'].sum(axis=1), min((k + 1) * w, slots))
      for age in range(min(k + 1, slots // w)):  # from k = 3 on, window k replaced k - 3
        start = (k - age) * w % slots
        np.testing.assert_array_equal(knn['keys'][:, start:start + w], written[k - age])
  np.testing.assert_array_equal(knn['valid'].sum(axis=1), [w, slots])
  np.testing.assert_array_equal(knn['keys'][0][np.asarray(knn['valid'][0])], written[5][0])
  np.testing.assert_array_equal(knn['next'], [w, 6 * w % slots])


def test_memory_content_carries_no_gradient_but_information():
  """One layer (the memory layer): window 0's tokens reach window 3 only through the kNN memory
  (the XL cache reaches one window back). Changing them changes window 3's logits, yet the
  gradient with respect to their embeddings is zero: memory entries are stop_gradient."""
  bindings = ('ModelConfig.num_layers = 1', 'MemorizingStack.memory_layer = 0')
  model, variables = zoo.build('memorizing', bindings), zoo.params('memorizing', bindings)
  w = model.window_length
  first = jnp.tile(200 + jnp.arange(w, dtype=jnp.int32), (BATCH, 1))
  rest = zoo.random_tokens(BATCH, 3 * w, seed=12, vocab=100)
  tokens = jnp.concatenate([first, rest], axis=1)

  @jax.jit
  @functools.partial(jax.grad, has_aux=True)
  def gradient_and_logits(embedding, tokens):   # one compile for both token streams
    params = dict(variables['params'], embed={'embedding': embedding})
    logits, _ = model.apply({'params': params}, tokens, model.init_memory(BATCH),
                            zoo.doc_starts(BATCH, 4))
    return logits[:, -w:].sum(), logits[:, -w:]

  embedding = variables['params']['embed']['embedding']
  grads, logits = gradient_and_logits(embedding, tokens)
  assert float(jnp.abs(grads[200:200 + w]).max()) == 0.0
  assert float(jnp.abs(grads[:100]).max()) > 0.0
  _, other = gradient_and_logits(embedding, tokens.at[:, :w].set(tokens[:, :w] + 20))
  assert not np.allclose(logits, other)


def test_paper_config_footprint():
  """Floats kept per lane, counted from the memory pytree: the MELODI paper's 147.8M."""
  expected = 13 * 512 * 2 * 1024 + 65536 * 2 * 1024
  assert zoo.floats_per_lane('paper/memorizing_dense_64k.gin') == expected


@pytest.mark.parametrize('binding, needle', [
    ('MemorizingStack.memory_slots = 4', 'must hold at least one window'),
    ('MemorizingStack.top_k = -1', 'top_k'),
    ('MemorizingStack.memory_layer = -9', 'memory_layer = -9 is outside'),
])
def test_impossible_configs_fail_at_build_time(binding, needle):
  zoo.assert_config_error('memorizing', binding, needle)
