"""MemLong-style retrieval: planted chunk is retrieved, least-retrieved chunk evicted, freezing."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import zoo
from melodi_jax.memory import retrieval
from melodi_jax.models import freezing

BATCH, CHUNKS, DIM = 2, 6, 16


def _full_index(seed: int = 0) -> dict:
  """A full index: random unit keys, written at windows 0..5 (slot 5 is the newest)."""
  keys = jax.random.normal(jax.random.PRNGKey(seed), (BATCH, CHUNKS, DIM))
  keys = keys / jnp.linalg.norm(keys, axis=-1, keepdims=True)
  index = retrieval.initial_index(BATCH, CHUNKS, DIM, jnp.float32)
  return dict(index, chunk_keys=keys, valid=jnp.ones((BATCH, CHUNKS), bool),
              written_at=jnp.tile(jnp.arange(CHUNKS, dtype=jnp.int32), (BATCH, 1)),
              clock=jnp.full((BATCH,), CHUNKS, jnp.int32))


def test_retrieval_returns_the_planted_chunk():
  """Lane 0 plants the newest chunk's key (scaled) in slot 2, lane 1 in slot 4: they come first;
  the newest chunk itself is never returned; an index holding only the newest finds nothing."""
  index = _full_index()
  keys = index['chunk_keys']
  keys = keys.at[0, 2].set(keys[0, 5]).at[1, 4].set(keys[1, 5])
  retrieve = jax.jit(retrieval.retrieve, static_argnames='top_k')
  chunks, found = retrieve(dict(index, chunk_keys=keys), top_k=3)
  np.testing.assert_array_equal(chunks[:, 0], [2, 4])
  assert found.all() and not (chunks == 5).any()
  lonely = dict(index, valid=index['valid'].at[:, :5].set(False))
  assert not retrieve(lonely, top_k=3)[1].any()


def test_eviction_removes_the_least_retrieved_chunk_oldest_first():
  """Counters [3, 1, 0, 2, 0, 0]: slots 2 and 4 tie at 0 hits, 2 is older; the newest (slot 5,
  0 hits) is protected. With a free slot, the free slot is used and nothing is evicted."""
  eviction_slot = jax.jit(retrieval.eviction_slot)
  index = dict(_full_index(), hits=jnp.array([[3, 1, 0, 2, 0, 0]] * BATCH, jnp.int32))
  np.testing.assert_array_equal(eviction_slot(index), [2, 2])
  chunks, found = jnp.array([[2, 4], [4, 0]]), jnp.array([[True, True], [True, False]])
  counted = retrieval.count_hits(index, chunks, found)
  np.testing.assert_array_equal(counted['hits'], [[3, 1, 1, 2, 1, 0], [3, 1, 0, 2, 1, 0]])
  np.testing.assert_array_equal(eviction_slot(counted), [1, 2])
  key = jnp.ones((BATCH, DIM)) / 4.0
  added = retrieval.add_chunk(counted, key, eviction_slot(counted))
  np.testing.assert_array_equal(added['written_at'][[0, 1], [1, 2]], [6, 6])
  np.testing.assert_array_equal(retrieval.newest_chunk(added), [1, 2])
  np.testing.assert_array_equal(added['hits'][[0, 1], [1, 2]], [0, 0])
  freed = dict(index, valid=index['valid'].at[1, 3].set(False))
  np.testing.assert_array_equal(eviction_slot(freed), [2, 3])


def test_frozen_lower_layers_stay_bit_identical_after_a_step():
  bindings = ('MemLongStack.train_only_above_memory_layer = True',)
  model = zoo.build('memlong', bindings)
  variables = zoo.params('memlong')  # the option changes the optimizer, not the parameters
  params = variables['params']
  tokens = zoo.random_tokens(BATCH, 2 * model.window_length, seed=13)

  def loss(params):
    logits, _ = model.apply({'params': params}, tokens, model.init_memory(BATCH),
                            zoo.doc_starts(BATCH, 2))
    logp = jax.nn.log_softmax(logits[:, :-1])
    return -jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1).mean()

  optimizer = freezing.freeze_lower_layers(optax.adamw(1e-2, weight_decay=0.1), model.config)

  @jax.jit
  def step(params):
    updates, _ = optimizer.update(jax.grad(loss)(params), optimizer.init(params), params)
    return optax.apply_updates(params, updates)

  stepped = step(params)
  same = jax.tree_util.tree_map(np.array_equal, stepped, params)
  assert all(jax.tree_util.tree_leaves([same['embed'], same['stack']['layer_00']]))
  assert not any(jax.tree_util.tree_leaves(
      [same['stack']['layer_01'], same['stack']['layer_02'], same['logits']]))
  assert not freezing.frozen_names(zoo.build('memlong').config)  # the option is off by default


@pytest.mark.parametrize('binding, needle', [
    ('MemLongStack.top_k = 3', 'top_k < chunks'),
    ('MemLongStack.chunks = 1', 'chunks >= 2'),
    ('MemLongStack.retrieval_layers = (0,)', 'must all be above'),
])
def test_impossible_configs_fail_at_build_time(binding, needle):
  zoo.assert_config_error('memlong', binding, needle)
