"""What Attention sows for diagnostics: the probabilities it used, and nothing when not asked."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zoo
from melodi_jax.layers import attention
from melodi_jax.layers.attention import INTERMEDIATES, Attention, KeyGroup, causal_mask

B, TQ, MEMORY, CROSS, H, DH, D = 2, 5, 3, 4, 2, 8, 16


def _inputs():
  rng = np.random.default_rng(0)
  normal = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
  x = normal(B, TQ, D)
  # Lane 1's first memory slot is empty; lane 1 has no cross memory at all (its gate is 1).
  group = KeyGroup(normal(B, MEMORY, H, DH), normal(B, MEMORY, H, DH), np.arange(-MEMORY, 0),
                   jnp.asarray([[True] * MEMORY, [False] + [True] * (MEMORY - 1)]))
  cross = KeyGroup(normal(B, CROSS, H, DH), normal(B, CROSS, H, DH), None,
                   jnp.asarray([[True, True, False, True], [False] * CROSS]))
  return x, group, cross


def test_sown_probabilities_are_the_softmax_of_the_definition():
  """softmax(q.k / sqrt(Dh) + position bias) over the allowed keys, for self- and cross-attention;
  the output is the out-projection of g * P_self V + (1 - g) * P_cross V_cross."""
  x, group, cross = _inputs()
  module = Attention(D, H, DH, position_buckets=8, position_max_distance=16, cross_gate=True)
  positions = np.arange(TQ)
  variables = module.init(jax.random.key(0), x, positions, [group], cross)
  variables = jax.tree.map(lambda v: v + 0.3, variables)  # a gate away from 1/2
  output, state = module.apply(variables, x, positions, [group], cross,
                               mutable=[INTERMEDIATES])
  sown = {name: value[0] for name, value in state[INTERMEDIATES].items()}

  bound = module.bind(variables)
  h = bound.norm(x)
  query, keys, values = bound.query(h) * DH ** -0.5, bound.key(h), bound.value(h)
  all_keys = jnp.concatenate([group.keys, keys], axis=1)
  all_values = jnp.concatenate([group.values, values], axis=1)
  key_positions = np.concatenate([group.positions, positions])
  allowed = (causal_mask(positions, key_positions)[None]
             & jnp.concatenate([group.valid, jnp.ones((B, TQ), bool)], axis=1)[:, None])
  logits = (jnp.einsum('bqhd,bkhd->bhqk', query, all_keys)
            + bound.position_bias(positions, key_positions))
  logits = jnp.where(allowed[:, None], logits, -jnp.inf)
  self_probs = jax.nn.softmax(logits, axis=-1)
  np.testing.assert_allclose(sown['self_probs'], self_probs, atol=1e-6)
  np.testing.assert_array_equal(jnp.broadcast_to(sown['self_mask'], (B, 1, TQ, MEMORY + TQ)),
                                allowed[:, None])

  cross_logits = jnp.einsum('bqhd,bkhd->bhqk', query, cross.keys)
  cross_probs = jnp.where(cross.valid[:, None, None],
                          jax.nn.softmax(jnp.where(cross.valid[:, None, None], cross_logits,
                                                   -1e30), axis=-1), 0.0)
  np.testing.assert_allclose(sown['cross_probs'], cross_probs, atol=1e-6)
  gate = jax.nn.sigmoid(variables['params']['gate_logit'])
  np.testing.assert_allclose(sown['cross_gate'][0, 0], gate, atol=1e-6)
  np.testing.assert_array_equal(sown['cross_gate'][1], 1.0)

  mixed = (sown['cross_gate'] * jnp.einsum('bhqk,bkhd->bqhd', self_probs, all_values)
           + (1 - sown['cross_gate']) * jnp.einsum('bhqk,bkhd->bqhd', cross_probs, cross.values))
  np.testing.assert_allclose(output.output, bound.out(mixed), atol=1e-5)


@pytest.mark.parametrize('name,extra', [('transformer_xl', ()), ('melodi', ()),
                                        ('memorizing', ()),
                                        ('melodi', ('ModelConfig.remat = True',))])
def test_a_model_sows_per_window_only_when_asked(name, extra, monkeypatch):
  model, variables = zoo.build(name, extra), zoo.params(name)
  tokens = zoo.random_tokens(2, 3 * model.window_length)
  args = (tokens, model.init_memory(2), zoo.doc_starts(2, 3))
  apply = lambda v, *a: model.apply(v, *a)
  logits, _ = apply(variables, *args)
  (sown_logits, _), state = model.apply(variables, *args, mutable=[INTERMEDIATES])
  np.testing.assert_array_equal(sown_logits, logits)

  probs = attention.sown(state[INTERMEDIATES], 'self_probs')
  masks = attention.sown(state[INTERMEDIATES], 'self_mask')
  assert list(probs) == [f'stack/layer_{i:02d}/attention' for i in range(3)]
  for path, p in probs.items():
    assert p.shape[:3] == (3, 2, model.config.num_heads), (path, p.shape)  # [N, B, H, Tq, Tk]
    mask = jnp.broadcast_to(masks[path], p.shape)
    np.testing.assert_array_equal(jnp.where(mask, 0.0, p), 0.0)
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)  # every query sees at least itself
  if name != 'transformer_xl':  # a gated cross memory in layer 1 (top-4 for memorizing)
    assert list(attention.sown(state[INTERMEDIATES], 'cross_probs')) == ['stack/layer_01/attention']

  # Not asked: the traced program is the one without any sow call.
  traced = str(jax.make_jaxpr(apply)(variables, *args))
  monkeypatch.setattr(nn.Module, 'sow', lambda *_, **__: False)
  assert str(jax.make_jaxpr(apply)(variables, *args)) == traced


@pytest.mark.parametrize('span', [None, 64], ids=['causal', 'sliding_window'])
def test_query_blocks_cover_every_allowed_key(span):
  """Each block's key range holds every key its rows may see; together the blocks compute fewer
  (query, key) pairs than the whole table."""
  positions, key_positions = np.arange(64), np.arange(-64, 64)
  mask = causal_mask(positions, key_positions, span)
  blocks = attention.query_blocks(mask, max_blocks=4, min_rows=8)
  assert len(blocks) >= 2
  assert blocks[0][0] == 0 and blocks[-1][1] == 64
  assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))   # the rows, once each, in order
  for row0, row1, col0, col1 in blocks:
    outside = np.ones(mask.shape[1], bool)
    outside[col0:col1] = False
    assert not mask[row0:row1][:, outside].any()
  assert sum((r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in blocks) < 0.9 * mask.size
  assert attention.query_blocks(mask, max_blocks=1) == [(0, 64, 0, 128)]


@pytest.mark.parametrize('span', [None, 48], ids=['causal', 'sliding_window'])
def test_blocked_attention_equals_one_block(span):
  """Query blocks skip only masked keys: outputs and gradients (parameters, inputs, memory) equal
  the one-block computation, with empty memory slots and a document start in lane 1."""
  tq, memory = 96, 48
  rng = np.random.default_rng(1)
  normal = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
  x, mem_keys, mem_values = normal(B, tq, D), normal(B, memory, H, DH), normal(B, memory, H, DH)
  valid = jnp.asarray([[True] * memory, [False] * (memory - 5) + [True] * 5])
  positions = np.arange(tq)
  def loss(variables, x, mem_keys, mem_values, blocks):
    group = KeyGroup(mem_keys, mem_values, np.arange(-memory, 0), valid)
    module = Attention(D, H, DH, position_buckets=8, position_max_distance=64, query_blocks=blocks)
    out = module.apply(variables, x, positions, [group], span=span).output
    return jnp.sum(out * jnp.cos(jnp.arange(out.size).reshape(out.shape))), out
  group = KeyGroup(mem_keys, mem_values, np.arange(-memory, 0), valid)
  variables = Attention(D, H, DH, position_buckets=8, position_max_distance=64).init(
      jax.random.key(0), x, positions, [group], span=span)
  grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3), has_aux=True), static_argnums=4)
  one_grads, one_out = grad(variables, x, mem_keys, mem_values, 1)
  blocked_grads, blocked_out = grad(variables, x, mem_keys, mem_values, 4)
  np.testing.assert_allclose(blocked_out, one_out, atol=1e-5, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5),
               blocked_grads, one_grads)
