"""The MQAR task (melodi_jax/data/mqar.py) and its scorer, on tiny shapes."""

import dataclasses

import numpy as np
import pytest

from melodi_jax.data import make_lanes, mqar
from melodi_jax.errors import UserError
from melodi_jax.experiments.memory_recall import score as mqar_score

W = 16
TINY = mqar.MQARConfig(window_length=W, num_pairs=(1, 2, 4), distances=(0, 1, 3),
                       document_tokens=8 * W, key_vocab=16, value_vocab=8, filler_vocab=8,
                       train_documents=40, eval_pairs=(1, 5), eval_distances=(0, 1, 2, 5),
                       eval_documents=3)


def _sets(tokens):
  keys = (tokens >= mqar.KEY_FIRST) & (tokens < mqar.KEY_FIRST + TINY.key_vocab)
  values = (tokens >= mqar.VALUE_FIRST) & (tokens < mqar.VALUE_FIRST + TINY.value_vocab)
  filler = (tokens >= mqar.FILLER_FIRST) & (tokens < mqar.FILLER_FIRST + TINY.filler_vocab)
  return keys, values, filler


def test_eval_documents_lay_the_query_exactly_k_windows_after_the_store():
  docs, episodes, names = mqar.split_documents(TINY, 'test')
  assert len(docs) == len(TINY.cells()) * TINY.eval_documents
  validation = mqar.split_documents(TINY, 'validation')[1]
  assert {(e.pairs, e.distance) for (e,) in validation} == {(1, 0), (1, 1), (1, 3), (5, 1),
                                                            (5, 3)}
  assert len(validation) == 5 * TINY.validation_documents
  assert (5, 0) not in TINY.cells()  # 2 x 5 pairs x 2 tokens > W: k = 0 cannot fit
  for tokens, (episode,), name in zip(docs, episodes, names):
    n, k = episode.pairs, episode.distance
    assert name.startswith(f'mqar/test/n{n}_k{k}_')
    keys, values, filler = _sets(tokens)
    assert np.all(keys | values | filler), 'every token is in exactly one of the three sets'
    assert episode.store < W, 'the store starts in window 0'
    assert episode.query == (episode.store + 2 * n if k == 0 else episode.store + k * W)
    assert episode.value_positions[-1] // W == k, 'the query region ends in window k'
    assert len(tokens) == episode.value_positions[-1] + 2  # one filler token after the last value
    # Each queried key is the key stored right before the value it must recall.
    queried = tokens[episode.value_positions - 1]
    stored = tokens[episode.source_positions - 1]
    np.testing.assert_array_equal(queried, stored)
    np.testing.assert_array_equal(tokens[episode.value_positions],
                                  tokens[episode.source_positions])
    assert np.sum(keys) == 2 * n and len(set(queried.tolist())) == n


def test_splits_are_deterministic_and_differ():
  a = mqar.split_documents(TINY, 'validation')[0]
  b = mqar.split_documents(dataclasses.replace(TINY, train_documents=41), 'validation')[0]
  c = mqar.split_documents(TINY, 'test')[0]
  assert all(np.array_equal(x, y) for x, y in zip(a, b))
  assert not all(np.array_equal(x, y) for x, y in zip(a, c))
  d = mqar.split_documents(dataclasses.replace(TINY, seed=1), 'validation')[0]
  assert not all(np.array_equal(x, y) for x, y in zip(a, d))


def test_train_documents_hold_whole_episodes_with_distinct_keys():
  documents = mqar.documents(TINY, 'train')
  docs, episodes, _ = mqar.split_documents(TINY, 'train')
  assert np.all(documents.lengths() == TINY.document_tokens)
  seen = set()
  for index, (tokens, eps) in enumerate(zip(docs, episodes)):
    keys, _, _ = _sets(tokens)
    assert len(set(tokens[keys].tolist())) == np.sum(keys) // 2, 'a key is stored once per doc'
    weights = documents.target_weights[documents.offsets[index]:documents.offsets[index + 1]]
    expected = np.zeros(len(tokens), np.float32)
    for episode in eps:
      expected[episode.value_positions] = 1.0
      assert episode.value_positions[-1] < TINY.document_tokens - 1
      region = episode.pairs * 2
      last = episode.store + (2 * region if episode.distance == 0 else region) - 1
      assert episode.store // W == last // W, 'a store (k = 0: and its query) is in one window'
      if episode.distance:
        assert episode.query == episode.store + episode.distance * W
      assert episode.distance in TINY.distances and episode.pairs in TINY.num_pairs
      seen.add(episode.distance)
    np.testing.assert_array_equal(weights, expected)
  assert seen == set(TINY.distances)
  windows_with_two = sum(
      len({e.store // W for e in eps if e.distance == 0}) < sum(e.distance == 0 for e in eps)
      for eps in episodes)
  assert windows_with_two > 0, 'k = 0 episodes are packed several to a window'


def test_lanes_put_one_train_document_in_each_segment():
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(mqar, 'MQARConfig', lambda: TINY)
    stream = make_lanes('mqar_bytes', 'train', batch_size=3, segment_length=8 * W,
                        window_length=W, train=True)
    for _ in range(3):
      batch = next(stream)
      assert np.all(batch['doc_start'][:, 0]) and not np.any(batch['doc_start'][:, 1:])
      assert np.all(batch['inputs'] >= mqar.FILLER_FIRST)
    with pytest.raises(UserError, match='MQARConfig.window_length'):
      make_lanes('mqar_bytes', 'train', batch_size=1, segment_length=64, window_length=8,
                 train=True)
    with pytest.raises(UserError, match='mqar_bytes'):
      make_lanes('mqar_spm16k', 'train', batch_size=1, segment_length=8 * W, window_length=W,
                 train=True)


@pytest.mark.parametrize('binding, needle', [
    (dict(document_tokens=3 * W), 'document_tokens'),
    (dict(num_pairs=(9,)), 'more than a window'),
    (dict(key_vocab=2), 'key_vocab'),
    (dict(distances=(-1,)), 'distances'),
])
def test_bad_configs_name_the_gin_parameter(binding, needle):
  with pytest.raises(UserError, match=needle):
    dataclasses.replace(TINY, **binding).validate()


class _Oracle:
  """A fake model that remembers every (key, value) pair it has read in a lane, across segments
  unless `forget_each_segment`, and predicts a key's value: the scorer must carry its memory."""

  def __init__(self, forget_each_segment=False):
    self.forget = forget_each_segment

  def init_memory(self, batch):
    return [({}, -1) for _ in range(batch)]

  def __call__(self, tokens, memory, doc_start):
    logits = np.zeros(tokens.shape + (256,), np.float32)
    new_memory = []
    for lane, (pairs, previous) in enumerate(memory):
      pairs = {} if (self.forget or doc_start[lane, 0]) else dict(pairs)
      for t, token in enumerate(tokens[lane]):
        if previous >= 0 and token >= mqar.VALUE_FIRST:
          pairs.setdefault(previous, token)
        logits[lane, t, pairs.get(int(token), 0)] = 1.0
        previous = int(token)
      new_memory.append((pairs, previous))
    return logits, new_memory


def test_score_reads_memory_across_segments():
  docs, episodes, _ = mqar.split_documents(TINY, 'test')
  episodes = [e[0] for e in episodes]
  kwargs = dict(window_length=W, segment_length=2 * W, batch_size=2)
  oracle = _Oracle()
  cells = mqar_score.score(oracle, oracle.init_memory, docs, episodes, **kwargs)
  assert {(c.pairs, c.distance) for c in cells} == set(TINY.cells())
  assert all(c.accuracy == 1.0 and c.documents == TINY.eval_documents for c in cells)
  forgetful = _Oracle(forget_each_segment=True)
  cells = mqar_score.score(forgetful, forgetful.init_memory, docs, episodes, **kwargs)
  by_cell = {(c.pairs, c.distance): c for c in cells}
  assert by_cell[(1, 0)].accuracy == 1.0   # store and query in one window
  assert by_cell[(1, 2)].accuracy == 0.0   # 2 windows back: always in an earlier segment
  assert by_cell[(5, 5)].accuracy == 0.0
  assert sum(count for _, count in by_cell[(5, 5)].source_windows.values()) == 5 * 3
  assert set(by_cell[(5, 5)].source_windows) <= {'4', '5'}


def test_without_cross_switches_the_long_term_memory_off():
  """MELODI with only a long-term memory: with the gates at +30 a later window's logits no longer
  depend on an earlier window's tokens (they do with the trained gates)."""
  import jax  # pylint: disable=g-import-not-at-top
  import zoo  # pylint: disable=g-import-not-at-top
  model = zoo.build('melodi_long_only')
  params = zoo.params('melodi_long_only')['params']
  w = model.window_length
  tokens = zoo.random_tokens(2, 2 * w, seed=3)
  changed = tokens.at[:, :w].set((tokens[:, :w] + 1) % 256)
  apply = jax.jit(lambda p, t: model.apply({'params': p}, t, model.init_memory(2),
                                           zoo.doc_starts(2, 2))[0][:, w:])
  assert not np.allclose(apply(params, tokens), apply(params, changed))
  from melodi_jax.experiments import runs  # pylint: disable=g-import-not-at-top
  off = runs.without_cross(params)
  np.testing.assert_array_equal(apply(off, tokens), apply(off, changed))
