"""The window-scanned models against tests/reference.py, written from the definitions: the whole
sequence at once with explicit masks. A wrong mask, span, slot or gate shows here
even where the code would agree with itself."""

import numpy as np
import pytest

import reference
import zoo
from melodi_jax.layers.position import relative_position_bucket

BATCH, SEGMENTS, WINDOWS = 2, 2, 4   # two segments of four windows: memory carried between them
# case -> (zoo config, extra gin bindings, reference kind)
CASES = {
    'vanilla': ('vanilla', (), 'vanilla'),
    'transformer_xl': ('transformer_xl', (), 'transformer_xl'),
    'memorizing_top_k': ('memorizing', (), 'memorizing'),
    'memorizing_dense': ('memorizing_dense', (), 'memorizing'),
}


@pytest.mark.parametrize('case', sorted(CASES))
def test_logits_equal_the_full_sequence_reference(case):
  """B = 2 lanes of different tokens, 8 windows in two segments, lane 1 starts a new document in
  window 5 (inside the second segment), parameters perturbed away from their initial values.
  The kNN buffer (3 windows) wraps: from window 4 on, lane 0 has forgotten the oldest windows."""
  name, bindings, kind = CASES[case]
  model = zoo.build(name, bindings)
  if case == 'memorizing_dense':
    assert model.config.stack.top_k == 0, 'the zoo config must be dense'
  variables = reference.perturbed(zoo.params(name, bindings), seed=16)
  w, n = model.window_length, SEGMENTS * WINDOWS
  tokens = zoo.random_tokens(BATCH, n * w, seed=16)
  doc_start = np.zeros((BATCH, n), bool)
  doc_start[:, 0] = True
  doc_start[1, 5] = True
  split = WINDOWS * w
  got, _ = zoo.run_segments(model, variables, [tokens[:, :split], tokens[:, split:]],
                            doc_start=[doc_start[:, :WINDOWS], doc_start[:, WINDOWS:]])
  want = reference.logits(reference.Spec.of(kind, model.config), variables, tokens, doc_start)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=case)


@pytest.mark.parametrize('buckets, max_distance', [(8, 16), (32, 128), (16, 32), (64, 512)])
def test_t5_buckets_equal_the_published_definition(buckets, max_distance):
  """Every distance 0 .. 2 x max_distance, and future offsets (bucket 0): (8, 16) is the tiny
  config, (32, 128) the default."""
  offsets = np.arange(-2 * max_distance, 3)
  want = [reference.t5_bucket(int(r), buckets, max_distance) for r in offsets]
  np.testing.assert_array_equal(relative_position_bucket(offsets, buckets, max_distance), want)
