"""How far a token reaches through each memory, forward and backward.

Forward: a token changed at position p changes the logits exactly as far as the memory says and
nothing before p. Backward: the last window's loss has a gradient with respect to window 0's
embeddings where the memory trains its write, and exactly none where it must not. Gradients are
scalar losses (jax.grad), never batched Jacobians: see WORKSPACE.md, Conventions.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import reference
import zoo

BATCH = 2
SEGMENT_WINDOWS = 4   # memory is carried across segments of 4 windows (B = 2, the shapes of
                      # test_memory_isolation and test_model_contract: compiled programs are shared)


def _influence(model, variables, tokens, probes, segments):
  """|change of the logits| per position, float[B, T], when lane b's token at probes[b] changes.

  Runs `segments` segments of SEGMENT_WINDOWS windows each, carrying the memory.
  """
  split = SEGMENT_WINDOWS * model.window_length
  def run(stream):
    parts = [stream[:, i * split:(i + 1) * split] for i in range(segments)]
    return zoo.run_segments(model, variables, parts)[0]
  lanes = np.arange(BATCH)
  changed = tokens.at[lanes, probes].set((tokens[lanes, probes] + 17) % model.vocab_size)
  return np.abs(np.asarray(run(changed)) - np.asarray(run(tokens))).max(axis=-1)


def _assert_reach(diff, p, last, what, window=None):
  """diff float[T]: zero before p and after `last`, non-zero at every position p..last (with
  `window`: somewhere in the window of `last`, for lookups that may pass a key over)."""
  assert not diff[:p].any(), f'{what}: token {p} changed earlier positions'
  assert not diff[last + 1:].any(), (
      f'{what}: token {p} reaches {np.flatnonzero(diff)[-1]}, beyond {last}')
  if window is None:
    missed = np.flatnonzero(diff[p:last + 1] == 0) + p
    assert not missed.size, f'{what}: token {p} does not reach {missed}'
  else:
    assert diff[last + 1 - window:last + 1].any(), f'{what}: token {p} does not reach {last}'


@pytest.mark.parametrize('name', ['vanilla', 'transformer_xl'])
def test_a_token_reaches_its_window_or_layers_times_window(name):
  """Vanilla: to the end of the token's window. Transformer-XL with L layers: exactly L x W
  tokens on (each layer looks W back), across segments; probes mid-window and at a window start."""
  model = zoo.build(name)
  variables = reference.perturbed(zoo.params(name), seed=31)
  w, layers = model.window_length, model.config.num_layers
  segments = 2
  tokens = zoo.random_tokens(BATCH, segments * SEGMENT_WINDOWS * w, seed=31)
  probes = np.array([5, w])
  diff = _influence(model, variables, tokens, probes, segments)
  for lane, p in enumerate(probes):
    last = (p // w + 1) * w - 1 if name == 'vanilla' else p + layers * w
    _assert_reach(diff[lane], p, last, name)


@pytest.mark.parametrize('name', ['memorizing', 'memorizing_dense'])
def test_memorizing_forgets_exactly_what_its_buffer_evicted(name):
  """One memorizing layer with 20 slots (2.5 windows): a query sees the newest 20 positions
  before its window. Token 2 is evicted by window 2's write, token 6 by window 3's: from the
  window after, their influence is exactly zero (through the XL cache it reaches W on before).
  Dense attention reads every entry, so there every position up to the eviction changes; top-k
  reads a key only when it ranks, so there some position of the last window before it."""
  bindings = ('ModelConfig.num_layers = 1', 'MemorizingStack.memory_layer = 0',
              'MemorizingStack.memory_slots = 20')
  model = zoo.build(name, bindings)
  variables = reference.perturbed(zoo.params(name, bindings), seed=32)
  w, slots = model.window_length, 20
  segments = 2
  tokens = zoo.random_tokens(BATCH, segments * SEGMENT_WINDOWS * w, seed=32)
  probes = np.array([2, 6])
  diff = _influence(model, variables, tokens, probes, segments)
  for lane, p in enumerate(probes):
    last_window = (p + slots) // w          # the last window k with k * W - slots <= p
    _assert_reach(diff[lane], p, (last_window + 1) * w - 1, name,
                  window=None if name == 'memorizing_dense' else w)
  assert [(p + slots) // w for p in probes] == [2, 3]


@pytest.mark.parametrize('name', ['melodi', 'melodi_short_only'])
def test_melodi_reaches_beyond_the_long_term_fifo(name):
  """The long-term FIFO holds L / I windows; through the short-term memory (alone, in
  melodi_short_only) a window-0 token still changes every window after that."""
  model = zoo.build(name)
  variables = reference.perturbed(zoo.params(name), seed=33)
  stack, w = model.config.stack, model.window_length
  fifo_windows = stack.long_term_slots // stack.long_term_increment
  segments = (fifo_windows + 2) // SEGMENT_WINDOWS + 1
  tokens = zoo.random_tokens(BATCH, segments * SEGMENT_WINDOWS * w, seed=33)
  diff = _influence(model, variables, tokens, np.array([3, 3]), segments)
  for lane in range(BATCH):
    assert not diff[lane, :3].any()
    per_window = diff[lane].reshape(-1, w).max(axis=1)
    assert len(per_window) > fifo_windows + 1
    assert per_window[fifo_windows + 1:].all(), (name, per_window)


# zoo.WITH_MEMORY, one config per way a gradient can travel through memory (melodi is short +
# long; memorizing_dense, melodi_unmixed_summaries and memlong, whose entries are stop_gradient
# too, write as memorizing and melodi do): each is a gradient compile, the costliest thing here.
GRADIENT_PROBES = ['melodi_short_only', 'melodi_long_only', 'block_recurrent', 'transformer_xl',
                   'memorizing']
# Memories whose entries carry no gradient (stop_gradient on write); Transformer-XL's cache does,
# but only L x W tokens back. The other kinds train their write through the carried memory.
NO_GRADIENT_BEYOND_XL = {'memorizing', 'transformer_xl'}
GRADIENT_WINDOWS = 6   # window 0 -> window 5: beyond XL's 3 layers x W and MELODI's L / I = 4


@functools.lru_cache(maxsize=None)
def _loss_gradient(name):
  """(embedding, tokens, weights float[B, T]) -> (d sum(weights * nll) / d embedding, logits);
  one compile per config. The targets are fixed random ids."""
  model = zoo.build(name)
  variables = reference.perturbed(zoo.params(name), seed=34)
  length = GRADIENT_WINDOWS * model.window_length
  targets = zoo.random_tokens(BATCH, length, seed=35, vocab=100)

  def loss(embedding, tokens, weights):
    params = dict(variables['params'], embed={'embedding': embedding})
    logits, _ = model.apply({'params': params}, tokens, model.init_memory(BATCH),
                            zoo.doc_starts(BATCH, GRADIENT_WINDOWS))
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), targets[..., None], axis=-1)[..., 0]
    return jnp.sum(weights * nll), logits

  return variables['params']['embed']['embedding'], jax.jit(jax.grad(loss, has_aux=True))


@pytest.mark.parametrize('name', GRADIENT_PROBES)
def test_gradient_reaches_window_0_through_memory(name):
  """Window 0 holds ids 200.. in lane 0 and 216.. in lane 1 (no other window uses ids >= 100), so
  their embedding rows' gradient is the gradient with respect to window 0's embeddings. Loss of
  lane 0 in window 3 (inside Transformer-XL's reach): non-zero in lane 0 for every kind; in the
  last window: non-zero where the write is trained, exactly zero where it must not be (and for
  the kNN memory the forward influence is there: the zero is its stop_gradient). Lane 1's rows
  are exactly zero throughout."""
  model = zoo.build(name)
  w = model.window_length
  embedding, gradient = _loss_gradient(name)
  first = jnp.stack([200 + jnp.arange(w), 216 + jnp.arange(w)]).astype(jnp.int32)
  rest = zoo.random_tokens(BATCH, (GRADIENT_WINDOWS - 1) * w, seed=36, vocab=100)
  tokens = jnp.concatenate([first, rest], axis=1)
  lane_rows = [slice(200, 200 + w), slice(216, 216 + w)]

  def window_0_gradient(window):
    weights = jnp.zeros(tokens.shape).at[0, window * w:(window + 1) * w].set(1.0)
    grads, logits = gradient(embedding, tokens, weights)
    assert not np.asarray(grads[lane_rows[1]]).any(), f'{name}: gradient crossed lanes'
    return float(jnp.abs(grads[lane_rows[0]]).max()), logits

  within_reach, _ = window_0_gradient(3)
  assert within_reach > 0, f'{name}: no gradient from window 3 to window 0'
  last, logits = window_0_gradient(GRADIENT_WINDOWS - 1)
  if name in NO_GRADIENT_BEYOND_XL:
    assert last == 0, f'{name}: gradient {last} beyond what its memory may carry'
  else:
    assert last > 0, f'{name}: the last window gets no gradient from window 0'
  if name == 'memorizing':
    _, other = gradient(embedding, tokens.at[0, :w].set(tokens[0, :w] + 20),
                        jnp.zeros(tokens.shape))
    assert not np.allclose(logits[0, -w:], other[0, -w:]), f'{name}: window 0 out of reach'
