"""Behaviour every model kind must have: causality, scan == unrolled, resets, flat compile size.

Parametrised over tests/zoo.py CONFIGS, so a new memory kind gets these tests by adding a line.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zoo
from melodi_jax.errors import UserError
from melodi_jax.layers import attention_kernel
from melodi_jax.layers.norms import RMSNorm
from melodi_jax.models.decoder import WindowStack

ALL = sorted(zoo.CONFIGS)
BATCH, WINDOWS = 2, 4


def _segment(model):
  return model.window_length * WINDOWS


@pytest.mark.parametrize('name', ALL)
def test_no_future_token_leaks(name):
  """Changing token p never changes logits at positions < p: in a window, across windows of a
  segment and across segments through the carried memory; logits at p itself do change."""
  model, variables = zoo.build(name), zoo.params(name)
  t = _segment(model)
  stream = zoo.random_tokens(BATCH, 2 * t, seed=1)
  base, _ = zoo.run_segments(model, variables, [stream[:, :t], stream[:, t:]])
  w = model.window_length
  for p in (3, w, w + 5, t - 1, t, t + 2 * w + 3):
    changed = stream.at[:, p].set((stream[:, p] + 17) % model.vocab_size)
    logits, _ = zoo.run_segments(model, variables, [changed[:, :t], changed[:, t:]])
    np.testing.assert_allclose(logits[:, :p], base[:, :p], atol=1e-6,
                               err_msg=f'{name}: token {p} leaked into earlier positions')
    assert not np.allclose(logits[:, p], base[:, p]), f'{name}: logits at {p} ignore token {p}'


def _unrolled(model, variables, tokens, memory, doc_start):
  """Reference: a Python loop over windows calling the scan body's code with the same params."""
  params = variables['params']
  config = model.config
  batch, length = tokens.shape
  w = model.window_length
  x = jnp.take(params['embed']['embedding'], tokens, axis=0).astype(config.dtype)
  stack = WindowStack(config)
  outputs = []
  for k in range(length // w):
    memory, y = stack.apply({'params': params['stack']}, memory,
                            (x[:, k * w:(k + 1) * w], doc_start[:, k]))
    outputs.append(y)
  y = RMSNorm(dtype=config.dtype).apply({'params': params['final_norm']},
                                                 jnp.concatenate(outputs, axis=1))
  logits = y @ params['logits']['kernel']
  return logits, memory


@pytest.mark.parametrize('name', ALL)
def test_scan_equals_unrolled(name):
  model, variables = zoo.build(name), zoo.params(name)
  tokens = zoo.random_tokens(BATCH, _segment(model), seed=2)
  doc_start = zoo.doc_starts(BATCH, WINDOWS).at[1, 2].set(True)
  memory = model.init_memory(BATCH)
  scanned, scanned_memory = zoo.jitted_apply(model)(variables, tokens, memory, doc_start)
  unrolled, unrolled_memory = _unrolled(model, variables, tokens, memory, doc_start)
  np.testing.assert_allclose(scanned, unrolled, atol=1e-5, rtol=1e-5)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5),
                         scanned_memory, unrolled_memory)


@pytest.mark.parametrize('name', ALL)
def test_reset_at_document_start(name):
  """Lane 0 starts a document at window k of the second segment: from k on its logits equal a
  fresh run of that document; lane 1 (no reset) is untouched by lane 0's reset."""
  model, variables = zoo.build(name), zoo.params(name)
  t, w, k = _segment(model), model.window_length, 2
  history = zoo.random_tokens(BATCH, t, seed=3)
  segment = zoo.random_tokens(BATCH, t, seed=4)
  reset = zoo.doc_starts(BATCH, WINDOWS, first=False).at[0, k].set(True)
  no_reset = zoo.doc_starts(BATCH, WINDOWS, first=False)
  logits, _ = zoo.run_segments(model, variables, [history, segment],
                               doc_start=[zoo.doc_starts(BATCH, WINDOWS), reset])
  plain, _ = zoo.run_segments(model, variables, [history, segment],
                              doc_start=[zoo.doc_starts(BATCH, WINDOWS), no_reset])
  fresh_tokens = segment[:, k * w:]
  fresh, _ = zoo.run_segments(model, variables, [fresh_tokens])
  np.testing.assert_allclose(logits[0, t + k * w:], fresh[0], atol=1e-5)
  np.testing.assert_allclose(logits[1], plain[1], atol=1e-6)


def _equation_count(jaxpr) -> int:
  total = 0
  for eqn in jaxpr.eqns:
    total += 1
    for sub in jax.core.jaxprs_in_params(eqn.params):
      total += _equation_count(sub)
  return total


@pytest.mark.parametrize('name', ALL)
def test_compile_size_flat_in_windows(name):
  model, variables = zoo.build(name), zoo.params(name)
  counts = []
  for n in (4, 32):
    tokens = jnp.zeros((BATCH, n * model.window_length), jnp.int32)
    jaxpr = jax.make_jaxpr(model.apply)(variables, tokens, model.init_memory(BATCH),
                                        zoo.doc_starts(BATCH, n))
    counts.append(_equation_count(jaxpr.jaxpr))
  assert counts[0] == counts[1], counts


@pytest.mark.parametrize('name', ALL)
def test_memory_leaves_are_per_lane_and_stable(name):
  """Every memory leaf is [B, ...] and apply returns the same structure, shapes and dtypes."""
  model, variables = zoo.build(name), zoo.params(name)
  memory = model.init_memory(3)
  for leaf in jax.tree_util.tree_leaves(memory):
    assert leaf.shape[0] == 3
  _, out = jax.eval_shape(model.apply, variables, jnp.zeros((3, _segment(model)), jnp.int32),
                          memory, zoo.doc_starts(3, WINDOWS))
  shapes = lambda tree: jax.tree_util.tree_map(lambda x: (x.shape, x.dtype), tree)
  assert shapes(out) == shapes(memory)


@pytest.mark.parametrize('name', ALL)
def test_dropout_only_in_training(name):
  model, variables = zoo.build(name, ('ModelConfig.dropout_rate = 0.5',)), zoo.params(name)
  tokens = zoo.random_tokens(BATCH, _segment(model), seed=5)
  args = (variables, tokens, model.init_memory(BATCH), zoo.doc_starts(BATCH, WINDOWS))
  apply = jax.jit(model.apply, static_argnames='train')
  a, _ = apply(*args)
  # An 'rbg' key (XLA's random bit generator): the masks compile in half the time threefry's take,
  # and which units drop is not what is checked here.
  c, _ = apply(*args, train=True, rngs={'dropout': jax.random.key(0, impl='rbg')})
  assert not np.allclose(a, c)


def _float_leaves(tree):
  return [leaf for leaf in jax.tree_util.tree_leaves(tree) if jnp.issubdtype(leaf.dtype,
                                                                             jnp.floating)]


# One config per kind of carried memory (each compiles two gradients: the slowest test here).
REMAT_CONFIGS = ['melodi', 'melodi_long_only', 'transformer_xl', 'memorizing', 'block_recurrent',
                 'memlong', 'vanilla']


# ModelConfig.remat_saves = 'dots' / 'all_dots' (the window scan keeping what the policy saves,
# the attention kernel's residuals with 'all_dots'): a FIFO and short-term memory (MELODI), a
# cache (Transformer-XL).
REMAT_DOTS_CONFIGS = ['melodi', 'transformer_xl']


@pytest.mark.slow
@pytest.mark.parametrize('name,saves', [(name, 'nothing') for name in REMAT_CONFIGS] +
                         [(name, saves) for name in REMAT_DOTS_CONFIGS
                          for saves in ('dots', 'all_dots')])
def test_remat_gives_the_same_loss_gradients_and_memory(name, saves):
  """ModelConfig.remat (models/recompute.py; with remat_saves 'dots' / 'all_dots' each window
  keeps its matmul outputs) changes what is stored, not what is computed: loss, gradients
  (also into the carried-in memory) and new memory equal the plain scan's, across a mid-segment
  document start in one lane and none in the other."""
  plain, variables = zoo.build(name), zoo.params(name)
  remat = zoo.build(name, ('ModelConfig.remat = True', f"ModelConfig.remat_saves = '{saves}'"))
  windows = 5
  tokens = zoo.random_tokens(BATCH, windows * plain.window_length, seed=3)
  warm_tokens = zoo.random_tokens(BATCH, windows * plain.window_length, seed=4)
  _, memory = zoo.jitted_apply(plain)(variables, warm_tokens, plain.init_memory(BATCH),
                                      zoo.doc_starts(BATCH, windows))
  doc_start = jnp.zeros((BATCH, windows), bool).at[1, 2].set(True)
  structure, leaves = jax.tree_util.tree_structure(memory), jax.tree_util.tree_leaves(memory)
  floating = [i for i, leaf in enumerate(leaves) if jnp.issubdtype(leaf.dtype, jnp.floating)]

  def loss(model):
    def fn(params, memory_floats):
      full = list(leaves)
      for i, leaf in zip(floating, memory_floats):
        full[i] = leaf
      logits, new = model.apply(params, tokens, jax.tree_util.tree_unflatten(structure, full),
                                doc_start, train=True, rngs={'dropout': jax.random.PRNGKey(0)})
      carried = sum(jnp.sum(jnp.sin(leaf.astype(jnp.float32))) for leaf in _float_leaves(new))
      return jnp.mean(jax.nn.log_softmax(logits)[..., 7]) + 1e-3 * carried, new
    # LLVM at -O0, both sides alike (a test-only program; compiling it at the default level
    # takes twice as long, as in test_every_parameter_learns.py).
    return jax.jit(jax.value_and_grad(fn, argnums=(0, 1), has_aux=True),
                   compiler_options={'xla_backend_optimization_level': 0})

  memory_floats = [leaves[i] for i in floating]
  (want, want_memory), want_grads = loss(plain)(variables, memory_floats)
  (got, got_memory), got_grads = loss(remat)(variables, memory_floats)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  for a, b in zip(jax.tree_util.tree_leaves((got_grads, got_memory)),
                  jax.tree_util.tree_leaves((want_grads, want_memory))):
    np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), atol=1e-6)
  if name != 'vanilla':
    assert any(np.any(g != 0) for g in want_grads[1]), 'no gradient reached the carried memory'


@pytest.mark.slow
def test_remat_with_attention_blocks_that_recompute_their_probabilities(monkeypatch):
  """The same for MELODI with 'all_dots' when its bias-free attention blocks (the long-term
  cross-attention) recompute their probabilities from a kept log-sum-exp, as they do over
  >= attention_kernel.RECOMPUTE_KEYS memory slots (the tiny model has far fewer)."""
  monkeypatch.setattr(attention_kernel, 'RECOMPUTE_KEYS', 1)
  test_remat_gives_the_same_loss_gradients_and_memory('melodi', 'all_dots')


def test_unknown_remat_saves_is_rejected():
  with pytest.raises(UserError, match="remat_saves = 'dot'.*'nothing', 'dots' or 'all_dots'"):
    zoo.build('vanilla', ('ModelConfig.remat = True', "ModelConfig.remat_saves = 'dot'"))
  # Without remat a policy would be silently ignored.
  with pytest.raises(UserError, match="remat_saves = 'dots' takes effect only with"):
    zoo.build('vanilla', ("ModelConfig.remat_saves = 'dots'",))


def test_remat_saves_sets_what_the_backward_pass_recomputes():
  """Executed matmul FLOPs of a gradient (the jaxpr, scans unrolled): 'all_dots' recomputes no
  matmul (as many as without remat), 'dots' only attention's QK^T and PV (here ~1/9 of what
  'nothing', the whole window, recomputes; a checkpoint saving nothing would recompute ~all)."""
  from melodi_jax.bench_lib import flops  # pylint: disable=g-import-not-at-top
  variables = zoo.params('transformer_xl')

  def executed(bindings):
    model = zoo.build('transformer_xl', bindings)
    tokens = zoo.random_tokens(BATCH, 3 * model.window_length, seed=3)
    memory, doc_start = model.init_memory(BATCH), zoo.doc_starts(BATCH, 3)

    def loss(params):
      logits, _ = model.apply(params, tokens, memory, doc_start)
      return jnp.mean(logits)
    return flops.matmul_flops(jax.grad(loss), variables)

  plain = executed(())
  saves = {name: executed(('ModelConfig.remat = True', f"ModelConfig.remat_saves = '{name}'"))
           for name in ('all_dots', 'dots', 'nothing')}
  assert saves['all_dots'] == plain, (plain, saves)
  assert 0 < saves['dots'] - plain < 0.5 * (saves['nothing'] - plain), (plain, saves)
  # A budget smaller than what the windows would keep: whole windows are recomputed.
  over = executed(('ModelConfig.remat = True', "ModelConfig.remat_saves = 'all_dots'",
                   'ModelConfig.remat_budget_mib = 0.001'))
  within = executed(('ModelConfig.remat = True', "ModelConfig.remat_saves = 'all_dots'",
                     'ModelConfig.remat_budget_mib = 1000'))
  assert (over, within) == (saves['nothing'], plain), (over, within, saves, plain)
