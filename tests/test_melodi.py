"""MELODI specifics: memory carries information across windows, the long-term FIFO, config errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zoo
from melodi_jax import models
from melodi_jax.errors import UserError

BATCH, WINDOWS = 2, 4


def _gradient_from_first_window(name: str) -> float:
  """|d loss(last window) / d embedding rows used only in window 0|: token ids 200..207 appear in
  window 0 alone, every later window uses ids below 100."""
  model, variables = zoo.build(name), zoo.params(name)
  w = model.window_length
  first = jnp.tile(200 + jnp.arange(w, dtype=jnp.int32) % 8, (BATCH, 1))
  rest = zoo.random_tokens(BATCH, (WINDOWS - 1) * w, seed=6, vocab=100)
  tokens = jnp.concatenate([first, rest], axis=1)
  targets = zoo.random_tokens(BATCH, w, seed=7, vocab=100)

  def last_window_loss(params):
    logits, _ = model.apply({'params': params}, tokens, model.init_memory(BATCH),
                            zoo.doc_starts(BATCH, WINDOWS))
    logp = jax.nn.log_softmax(logits[:, -w:])
    return -jnp.take_along_axis(logp, targets[..., None], axis=-1).mean()

  grads = jax.jit(jax.grad(last_window_loss))(variables['params'])
  return float(jnp.abs(grads['embed']['embedding'][200:208]).max())


# S+L only: the short-term-only and long-term-only ablations are held to more by
# test_memory_reach.py's gradient probe (window 0 -> window 3 and window 5, lanes apart).
@pytest.mark.parametrize('name', ['melodi'])
def test_memory_carries_gradient_across_windows(name):
  assert _gradient_from_first_window(name) > 0.0


def test_without_memory_no_gradient_across_windows():
  assert _gradient_from_first_window('vanilla') == 0.0


def test_long_term_fifo_fills_and_drops_oldest_first():
  """Windows one at a time: after k windows min(k*I, L) slots are filled; each window's increment
  enters at the end and moves I slots towards the front per window until it drops out."""
  model, variables = zoo.build('melodi'), zoo.params('melodi')
  stack = model.config.stack
  slots, increment = stack.long_term_slots, stack.long_term_increment
  layer = f'layer_{stack.long_term_layers[0]:02d}'
  apply = zoo.jitted_apply(model)
  memory = model.init_memory(BATCH)
  tokens = zoo.random_tokens(BATCH, model.window_length * 8, seed=8)
  increments = []
  for k in range(8):
    window = tokens[:, k * model.window_length:(k + 1) * model.window_length]
    _, memory = apply(variables, window, memory, jnp.full((BATCH, 1), k == 0))
    fifo = memory[layer]['long_term']
    increments.append(np.asarray(fifo['keys'][:, -increment:]))
    filled = np.asarray(fifo['valid'].sum(axis=1))
    np.testing.assert_array_equal(filled, min((k + 1) * increment, slots))
    assert not fifo['valid'][:, :slots - min((k + 1) * increment, slots)].any()  # empty in front
    for age in range(min(k + 1, slots // increment)):
      start = slots - (age + 1) * increment
      np.testing.assert_array_equal(np.asarray(fifo['keys'][:, start:start + increment]),
                                    increments[k - age])


def test_memory_shapes_follow_the_config():
  model = zoo.build('melodi')
  config, stack = model.config, model.config.stack
  memory = model.init_memory(5)
  assert sorted(memory) == [f'layer_{i:02d}' for i in range(config.num_layers)]
  for i in range(config.num_layers):
    short = memory[f'layer_{i:02d}']['short_term']
    assert short['tokens'].shape == (5, stack.short_term_slots, config.model_dim)
  long = memory[f'layer_{stack.long_term_layers[0]:02d}']['long_term']
  assert long['keys'].shape == (5, stack.long_term_slots, config.num_heads, config.head_dim)
  assert long['valid'].shape == (5, stack.long_term_slots)


@pytest.mark.parametrize('binding, needle', [
    ('MelodiStack.long_term_slots = 7', 'multiple of long_term_increment'),
    ('MelodiStack.long_term_increment = 0', 'long_term_increment'),
    ('MelodiStack.long_term_slots = 1', 'at least long_term_increment'),
    ('MelodiStack.long_term_layers = (9,)', 'long_term_layers'),
    ('MelodiStack.summary_tokens = -1', 'summary_tokens'),
    ('ModelConfig.window_length = 0', 'window_length'),
])
def test_impossible_configs_fail_at_build_time(binding, needle):
  zoo.assert_config_error('melodi', binding, needle)


def test_summaries_stop_above_the_last_layer_that_writes_memory():
  """Long-term memory in layer 1 of 3, no short-term memory: the top layer computes no
  summaries and layer 1 mixes none for it (that M-up would get no gradient)."""
  options = zoo.build('melodi_long_only').config.layer_options()
  assert [o.summary_tokens for o in options] == [4, 4, 0]
  assert [o.summaries_up for o in options] == ['mix', 'none', 'none']
  zoo.assert_config_error('melodi_long_only', 'MelodiStack.long_term_layers = ()',
                          'no memory is written from the summaries')


def test_window_must_divide_the_segment():
  with pytest.raises(UserError, match='not a multiple of ModelConfig.window_length'):
    models.build(['models/melodi.gin', zoo.TINY], segment_length=30)
  model, variables = zoo.build('melodi'), zoo.params('melodi')
  with pytest.raises(ValueError, match='not a multiple'):
    model.apply(variables, jnp.zeros((1, 30), jnp.int32), model.init_memory(1),
                jnp.ones((1, 3), bool))


def test_gin_errors_are_config_errors():
  with pytest.raises(UserError, match='not found'):
    models.build(['models/no_such_model.gin'])
  with pytest.raises(UserError, match='gin config error'):
    models.build(['models/melodi.gin'], ['MelodiStack.short_term_slotz = 3'])


def test_paper_configs_build_without_allocating():
  for name, floats in (('paper/melodi_s128_l64.gin', 128), ('paper/melodi_s192_l96.gin', 192)):
    model = models.build([name], segment_length=4096)
    memory = jax.eval_shape(lambda: model.init_memory(1))
    assert memory['layer_00']['short_term']['tokens'].shape == (1, floats, 1024)
    assert len(memory) == 13


def test_wrongly_typed_binding_is_a_config_error():
  with pytest.raises(UserError, match='ModelConfig.window_length'):
    models.build(['models/melodi.gin', zoo.TINY], ["ModelConfig.window_length = 'x'"])
