"""The memory_recall diagnostics' helpers (the diagnostics themselves run on trained runs)."""

import numpy as np

import zoo
from melodi_jax.experiments.memory_recall import retrieval_hits


def test_find_index_locates_the_retrieval_index_and_only_there():
  index = retrieval_hits.find_index(zoo.build('memlong').init_memory(2))
  assert index is not None and index['valid'].shape == (2, 3)   # chunks = 3 in the zoo
  assert not np.asarray(index['valid']).any()
  assert retrieval_hits.find_index(zoo.build('transformer_xl').init_memory(2)) is None


def test_random_hit_rate():
  assert retrieval_hits.random_hit_rate(3, 4) == 1.0   # every candidate is retrieved
  assert retrieval_hits.random_hit_rate(4, 4) == 1.0
  assert retrieval_hits.random_hit_rate(8, 4) == 0.5
  assert retrieval_hits.random_hit_rate(31, 4) == 4 / 31
