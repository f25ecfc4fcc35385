"""Block-Recurrent Transformer: closed gates keep the state; documents start from learned state."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zoo
from melodi_jax.layers.attention import Attention, KeyGroup
from melodi_jax.memory import recurrent

BATCH = 2
LAYER = 'layer_00'  # third from the top of the tiny 3-layer stack


def _close(gate_params: dict) -> dict:
  """Saturates a StateGate: keep = 1 and write = 0 exactly in float32, whatever the update."""
  if 'gate_bias' in gate_params:   # fixed gate
    return dict(gate_params, gate_bias=jnp.full_like(gate_params['gate_bias'], 1e4))
  shift = {'forget_gate': 1e4, 'input_gate': -1e4}
  return {name: dict(values, bias=values['bias'] + shift[name]) if name in shift else values
          for name, values in gate_params.items()}


@pytest.mark.parametrize('kind', recurrent.GATES)
def test_closed_gate_keeps_the_state(kind):
  gate = recurrent.StateGate(kind)
  states, update = jax.random.normal(jax.random.PRNGKey(0), (2, BATCH, 4, 8))
  params = jax.jit(gate.init)(jax.random.PRNGKey(1), states, update)['params']
  apply = jax.jit(gate.apply)
  np.testing.assert_array_equal(apply({'params': _close(params)}, states, update), states)
  assert not np.allclose(apply({'params': params}, states, update), states)


def test_closed_gates_keep_the_state_across_a_window_and_document_start_uses_learned_state():
  """Both lanes carry arbitrary states; lane 0 starts a document. With both state gates closed,
  two windows leave lane 1's state unchanged and give lane 0 exactly the learned initial state;
  with the learned gates the state changes."""
  model, params = zoo.build('block_recurrent'), zoo.params('block_recurrent')['params']
  memory = model.init_memory(BATCH)
  carried = jax.random.normal(jax.random.PRNGKey(3), memory[LAYER]['recurrent']['states'].shape)
  memory[LAYER]['recurrent'] = {'states': carried, 'fresh': jnp.zeros((BATCH,), bool)}
  tokens = zoo.random_tokens(BATCH, 2 * model.window_length, seed=9)
  doc_start = jnp.array([[True, False], [False, False]])
  apply = zoo.jitted_apply(model)
  learned = params['stack'][LAYER]['initial_states']['states']
  layer = params['stack'][LAYER]
  layer = dict(layer, attention_gate=_close(layer['attention_gate']),
               mlp_gate=_close(layer['mlp_gate']))
  closed = dict(params, stack=dict(params['stack'], **{LAYER: layer}))

  _, out = apply({'params': closed}, tokens, memory, doc_start)
  states = out[LAYER]['recurrent']['states']
  np.testing.assert_array_equal(states[0], learned)
  np.testing.assert_array_equal(states[1], carried[1])
  assert not out[LAYER]['recurrent']['fresh'].any()

  _, out = apply({'params': params}, tokens, memory, doc_start)
  states = out[LAYER]['recurrent']['states']
  assert not np.allclose(states[0], learned) and not np.allclose(states[1], carried[1])


def test_self_weight_init_sets_the_gate_between_self_attention_and_states():
  """BlockRecurrentStack.self_weight_init = g: the recurrent layer's gate starts at g on
  self-attention (1 - g on the states) in every head-channel."""
  options = recurrent.RecurrentStates(8, self_weight_init=0.9).attention_options()
  attention = Attention(16, 2, 8, **options)
  x = jnp.ones((1, 4, 16))
  states = KeyGroup(jnp.ones((1, 3, 2, 8)), jnp.ones((1, 3, 2, 8)))
  params = attention.init(jax.random.PRNGKey(0), x, np.arange(4), cross=states)['params']
  np.testing.assert_allclose(jax.nn.sigmoid(params['gate_logit']), np.full((2, 8), 0.9),
                             rtol=1e-6)
  even = recurrent.RecurrentStates(8).attention_options()
  assert even == {'cross_gate': True, 'gate_logit_init': 0.0}


@pytest.mark.parametrize('binding, needle', [
    ('BlockRecurrentStack.self_weight_init = 1.0', 'self_weight_init = 1.0 must be in'),
    ("BlockRecurrentStack.gate = 'gru'", 'BlockRecurrentStack.gate'),
    ('BlockRecurrentStack.recurrent_layer = 3', 'recurrent_layer = 3 is outside'),
    ('BlockRecurrentStack.num_states = 0', 'num_states'),
])
def test_impossible_configs_fail_at_build_time(binding, needle):
  zoo.assert_config_error('block_recurrent', binding, needle)
