"""Memory is carried, not recomputed, and kept per lane: two segments give what one
call gives, and a token changed in one lane leaves the other lane bit-identical. One zoo config per
kind of carried memory; parameters perturbed away from their initial values (tests/reference.py).
"""

import jax
import numpy as np
import pytest

import reference
import zoo

# One config per kind of carried memory (MELODI's short- and long-term memory, the XL cache, the
# kNN buffer, recurrent states, the retrieval index); the other zoo configs vary how these are
# read, not how they are carried. Compiles are the cost: each config adds one whole-stream program
# (segments of 4 windows, B = 2, as test_model_contract runs them).
KINDS = ['melodi', 'transformer_xl', 'memorizing', 'block_recurrent', 'memlong']
BATCH, WINDOWS = 2, 8     # a stream of 8 windows, as one call or as two segments of 4


def _setup(name):
  model = zoo.build(name)
  variables = reference.perturbed(zoo.params(name), seed=21)
  tokens = zoo.random_tokens(BATCH, WINDOWS * model.window_length, seed=21)
  doc_start = np.zeros((BATCH, WINDOWS), bool)
  doc_start[:, 0] = True
  doc_start[1, 6] = True  # lane 1 starts a new document in the second segment
  return model, variables, tokens, doc_start


def _two_segments(model, variables, tokens, doc_start):
  half = WINDOWS // 2
  split = half * model.window_length
  return zoo.run_segments(model, variables, [tokens[:, :split], tokens[:, split:]],
                          doc_start=[doc_start[:, :half], doc_start[:, half:]])


@pytest.mark.parametrize('name', KINDS)
def test_two_segments_equal_one_call(name):
  """Logits and the final memory (every leaf) of 4 + 4 windows equal those of one 8-window call."""
  model, variables, tokens, doc_start = _setup(name)
  whole, whole_memory = zoo.run_segments(model, variables, [tokens], doc_start=[doc_start])
  split, split_memory = _two_segments(model, variables, tokens, doc_start)
  np.testing.assert_allclose(split, whole, rtol=1e-5, atol=1e-5)
  paths = jax.tree_util.tree_flatten_with_path(whole_memory)[0]
  for (path, want), got in zip(paths, jax.tree_util.tree_leaves(split_memory)):
    np.testing.assert_allclose(np.asarray(got, np.float64), np.asarray(want, np.float64),
                               rtol=1e-5, atol=1e-5, err_msg=f'{name}: memory leaf {path}')


@pytest.mark.parametrize('name', KINDS)
def test_a_token_changed_in_one_lane_leaves_the_other_bit_identical(name):
  """Tokens changed in one lane only (in windows 0, 1, 4 and 6: the second segment, so through
  every memory and across the carry): the other lane's logits and memory do not change a bit,
  while the changed lane's logits do. Both directions (a lane may only read the other's)."""
  model, variables, tokens, doc_start = _setup(name)
  w = model.window_length
  positions = np.array([3, w + 1, 4 * w + 5, 6 * w + 7])
  base, base_memory = _two_segments(model, variables, tokens, doc_start)
  for lane in range(BATCH):
    changed = tokens.at[lane, positions].set((tokens[lane, positions] + 17) % model.vocab_size)
    logits, memory = _two_segments(model, variables, changed, doc_start)
    other = 1 - lane
    np.testing.assert_array_equal(logits[other], base[other],
                                  err_msg=f'{name}: lane {lane} leaked into lane {other}')
    for got, want in zip(jax.tree_util.tree_leaves(memory),
                         jax.tree_util.tree_leaves(base_memory)):
      np.testing.assert_array_equal(got[other], want[other],
                                    err_msg=f'{name}: lane {lane} leaked into lane {other} memory')
    assert not np.allclose(logits[lane], base[lane]), f'{name}: lane {lane} ignores its tokens'
