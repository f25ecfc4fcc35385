"""Block-Recurrent Transformer: closed gates keep the state; document starts use the learned state."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zoo

BATCH = 2
LAYER = 'layer_00'  # third from the top of the tiny 3-layer stack
VARIANTS = {'lstm': (), 'fixed': ("BlockRecurrentStack.gate = 'fixed'",)}


def _closed(params: dict, kind: str) -> dict:
  """Saturates every state gate: keep = 1, write = 0 (exactly, in float32)."""
  layer = dict(params['stack'][LAYER])
  for gate in ('attention_gate', 'mlp_gate'):
    values = dict(layer[gate])
    if kind == 'fixed':
      values['gate_bias'] = jnp.full_like(values['gate_bias'], 1e4)
    else:
      values['forget_gate'] = dict(values['forget_gate'], bias=values['forget_gate']['bias'] + 1e4)
      values['input_gate'] = dict(values['input_gate'], bias=values['input_gate']['bias'] - 1e4)
    layer[gate] = values
  return dict(params, stack=dict(params['stack'], **{LAYER: layer}))


@pytest.mark.parametrize('kind', sorted(VARIANTS))
def test_closed_gate_keeps_state_and_document_start_uses_learned_state(kind):
  """Both lanes carry arbitrary states; lane 0 starts a document. With the gates closed, a
  window leaves lane 1's state unchanged and gives lane 0 exactly the learned initial state; with
  the learned gates the state does change."""
  model = zoo.build('block_recurrent', VARIANTS[kind])
  params = zoo.params('block_recurrent', VARIANTS[kind])['params']
  w = model.window_length
  memory = model.init_memory(BATCH)
  carried = jax.random.normal(jax.random.PRNGKey(3), memory[LAYER]['recurrent']['states'].shape)
  memory[LAYER]['recurrent'] = {'states': carried, 'fresh': jnp.zeros((BATCH,), bool)}
  tokens = zoo.random_tokens(BATCH, 2 * w, seed=9)
  doc_start = jnp.array([[True, False], [False, False]])
  apply = zoo.jitted_apply(model)
  learned = params['stack'][LAYER]['initial_states']['states']

  _, out = apply({'params': _closed(params, kind)}, tokens, memory, doc_start)
  states = out[LAYER]['recurrent']['states']
  np.testing.assert_array_equal(states[0], learned)
  np.testing.assert_array_equal(states[1], carried[1])
  assert not out[LAYER]['recurrent']['fresh'].any()

  _, out = apply({'params': params}, tokens, memory, doc_start)
  states = out[LAYER]['recurrent']['states']
  assert not np.allclose(states[0], learned) and not np.allclose(states[1], carried[1])


def test_paper_config_footprint():
  """Floats kept per lane, counted from the memory pytree: the paper's 13.1M (DESIGN §6)."""
  assert zoo.floats_per_lane('paper/block_recurrent.gin') == 12 * 512 * 2 * 1024 + 512 * 1024
