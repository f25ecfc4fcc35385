"""The recall task (melodi_jax/data/recall.py) and its scorer (experiments/recall_score.py)."""
import hashlib

import numpy as np
import pytest

from melodi_jax.data import recall
from melodi_jax.experiments import recall_score

WORDS = b'and the lord said unto moses verse 12 of chapter 3 key is here thou shalt not '


def _pool(size=20000):
  rng = np.random.default_rng(0)
  words = WORDS.split()
  return recall.filler_pool([('a', b' '.join(rng.choice(words, size // 5)))])


def test_example_layout():
  pool = _pool()
  assert b'key is' not in pool.lower() and not any(c in pool for c in b'0123456789')
  rng = np.random.default_rng(1)
  for k in recall.DISTANCES:
    example = recall.make_example(rng, pool, k, f'x{k}')
    key = example.key.encode()
    assert len(example.key) == 5 and example.key.isdigit()
    assert example.text[example.key_position:example.key_position + 5] == key
    assert example.key_position + 5 <= recall.WINDOW           # stated inside window 0
    assert example.query_position - example.key_position == k * recall.WINDOW
    assert example.text[example.query_position - len(recall.PREFIX):example.query_position] == \
        recall.PREFIX
    assert example.text.count(recall.PREFIX) == 2                # statement + question only
    assert len(example.text) > example.query_position + 5        # the digits are targets


def test_train_documents_repeat_the_question_every_k_windows():
  pool = _pool()
  rng = np.random.default_rng(2)
  for k, questions in [(1, 32), (3, 10), (32, 1)]:
    example = recall.make_example(rng, pool, k, f'x{k}', questions=questions)
    key = example.key.encode()
    assert example.text.count(recall.PREFIX) == questions + 1
    expected = example.key_position + k * recall.WINDOW * np.arange(1, questions + 1)
    np.testing.assert_array_equal(example.question_positions, expected)
    for at in [example.key_position, *expected]:   # each k windows after the one before
      assert example.text[at - len(recall.PREFIX):at + 5] == recall.PREFIX + key
  with pytest.raises(ValueError, match='questions'):
    recall.make_example(rng, pool, 2, 'bad', questions=0)


def test_train_distances_favour_short_ones_and_cover_every_k():
  k = recall.train_distances(np.random.default_rng(0), 20000)
  counts = np.bincount(k, minlength=max(recall.DISTANCES) + 1)[1:]
  assert counts.min() > 0 and k.min() == 1 and k.max() == max(recall.DISTANCES)
  assert counts[0] / counts[1] == pytest.approx(2, rel=0.1)          # P(k) ~ 1 / k
  assert counts[0] / counts[31] == pytest.approx(32, rel=0.3)


def test_examples_per_split_are_deterministic():
  pool = _pool()
  test = recall.examples('test', pool, examples_per_distance=3)
  assert sorted({e.distance for e in test}) == list(recall.DISTANCES)
  assert len(test) == 3 * len(recall.DISTANCES)
  assert [e.text for e in test] == [e.text for e in recall.examples('test', pool,
                                                                    examples_per_distance=3)]
  validation = recall.examples('validation', pool, examples_per_distance=3)
  assert {e.key for e in validation} != {e.key for e in test}
  train = recall.examples('train', pool, train_documents=50)
  assert len(train) == 50
  echoes = [e for e in train if e.questions == 0]
  keys = [e for e in train if e.questions > 0]
  assert 10 < len(echoes) < 40 and len(echoes) + len(keys) == 50     # ECHO_FRACTION = 0.5
  assert all(e.questions == max(1, recall.TRAIN_SPAN // e.distance) for e in keys)
  for echo in echoes:             # runs of a fresh snippet repeated: copyable from one snippet back
    assert echo.key == '' and len(echo.text) == recall.ECHO_BYTES
    assert recall.PREFIX not in echo.text
    assert len(echo.periods) == recall.ECHO_BYTES // recall.ECHO_RUN
    runs = [echo.text[i:i + recall.ECHO_RUN] for i in range(0, recall.ECHO_BYTES, recall.ECHO_RUN)]
    for run, period in zip(runs, echo.periods):
      assert period == next(p for p in range(8, 65) if run[p:] == run[:-p])
    assert len(set(runs)) > 1                                 # a fresh snippet per run
  assert all(e.questions == 1 for e in test + validation)     # the scored split: one question


def _oracle(reach_tokens: int, vocab: int = 256):
  """A fake model that recalls the key iff the statement is within `reach_tokens`: its memory is
  the document so far (a numpy array per lane)."""
  prefix = np.frombuffer(recall.PREFIX, np.uint8)

  def init_memory(batch):
    return [np.zeros(0, np.int64) for _ in range(batch)]

  def apply_fn(tokens, memory, doc_start):
    batch, length = tokens.shape
    logits = np.zeros((batch, length, vocab), np.float32)
    new_memory = []
    for lane in range(batch):
      history = memory[lane] if not doc_start[lane, 0] else np.zeros(0, np.int64)
      history = np.concatenate([history, tokens[lane]])
      offset = len(history) - length
      for t in range(length):
        logits[lane, t, ord('x')] = 1.0                      # default: not a digit
        seen = history[:offset + t + 1]
        text = bytes(seen.astype(np.uint8))
        first = text.find(recall.PREFIX)
        last = text.rfind(recall.PREFIX)
        if first < 0 or last == first:
          continue
        typed = len(text) - (last + len(prefix))             # digits of the question so far
        if 0 <= typed < 5 and (len(text) - first) <= reach_tokens:
          logits[lane, t, seen[first + len(prefix) + typed]] = 2.0
      new_memory.append(history)
    return logits, new_memory

  return apply_fn, init_memory


def test_score_counts_only_what_the_model_can_see():
  pool = _pool()
  examples = recall.examples('test', pool, examples_per_distance=2)
  examples = [e for e in examples if e.distance <= 4]
  reach = int(2.5 * recall.WINDOW)       # sees k = 1, 2 windows back, not 4
  apply_fn, init_memory = _oracle(reach)
  scores = recall_score.score(apply_fn, init_memory, examples, window_length=recall.WINDOW,
                              segment_length=2 * recall.WINDOW, batch_size=3,
                              example_window=recall.WINDOW)
  assert sorted(scores) == [1, 2, 4]
  assert scores[1].digit_accuracy == scores[2].digit_accuracy == 1.0
  assert scores[1].key_accuracy == 1.0 and scores[1].examples == 2
  assert scores[4].digit_accuracy == 0.0 and scores[4].per_digit_accuracy == [0.0] * 5


def test_score_checks_the_window():
  apply_fn, init_memory = _oracle(10)
  with pytest.raises(ValueError, match='window'):
    recall_score.score(apply_fn, init_memory, [], window_length=32, segment_length=64,
                       batch_size=1, example_window=64)


def _books(tmp_path):
  books = tmp_path / 'books'
  rows = ['file\tbytes\tmd5\tsplit']
  for split in ('train', 'validation', 'test'):
    data = b' '.join(np.random.default_rng(len(split)).choice(WORDS.split(), 3000))
    (books / split).mkdir(parents=True)
    (books / split / 'a.txt').write_bytes(data)
    rows.append(f'{split}/a.txt\t{len(data)}\t{hashlib.md5(data).hexdigest()}\t{split}')
  (books / 'manifest.tsv').write_text('\n'.join(rows) + '\n')


def test_recall_task_is_registered(tmp_path):
  from melodi_jax.data import make_lanes
  _books(tmp_path)
  stream = make_lanes('recall_bytes', 'test', batch_size=2, segment_length=128,
                      window_length=64, train=False, data_dir=str(tmp_path))
  batch = next(stream)
  assert batch['inputs'].shape == (2, 128) and batch['doc_start'][:, 0].all()
  text = bytes(batch['inputs'][0].astype(np.uint8))
  assert recall.PREFIX in text


def test_recallkeys_weighs_the_question_digits_and_the_echo_repeats_only(tmp_path):
  from melodi_jax.data import make_lanes
  from melodi_jax.errors import UserError
  _books(tmp_path)
  recall._cached_examples.cache_clear()
  examples = {e.name: e for e in recall.load_examples('train', str(tmp_path))}
  stream = make_lanes('recallkeys_bytes', 'train', batch_size=2, segment_length=256,
                      window_length=64, train=True, data_dir=str(tmp_path))
  documents = stream.documents
  # Expected, from the examples alone: weight 1 on the question digits of key documents and on
  # the echo bytes that repeat the byte one snippet back.
  key_docs = echo_docs = 0
  for index in range(20):
    example = examples[documents.names[index]]
    weights = documents.target_weights[documents.offsets[index]:documents.offsets[index + 1]]
    expected = np.zeros(len(example.text), np.float32)
    for q in range(example.questions):
      at = example.query_position + q * example.distance * recall.WINDOW
      expected[at:at + 5] = 1
    if example.questions == 0:                 # every byte that repeats the one a snippet back
      text = np.frombuffer(example.text, np.uint8)
      for run, period in enumerate(example.periods):
        start, end = run * recall.ECHO_RUN, (run + 1) * recall.ECHO_RUN
        expected[start + period:end] = 1
        assert 8 <= period <= 64
        np.testing.assert_array_equal(text[start + period:end], text[start:end - period])
      echo_docs += 1
    else:
      key_docs += 1
    np.testing.assert_array_equal(weights, expected)
  assert key_docs >= 3 and echo_docs >= 3
  lm = make_lanes('recall_bytes', 'train', batch_size=2, segment_length=256, window_length=64,
                  train=True, data_dir=str(tmp_path))
  seen = 0
  for _ in range(8):                           # same tokens, only the weights differ
    keys, plain = next(stream), next(lm)
    np.testing.assert_array_equal(keys['inputs'], plain['inputs'])
    weighted = keys['loss_weights'] > 0
    seen += weighted.sum()
    assert np.all(plain['loss_weights'][weighted] == 1)
    np.testing.assert_array_equal(keys['bytes'], keys['loss_weights'].sum(axis=1))
  assert seen >= 5
  with pytest.raises(UserError, match='recallkeys_bytes'):
    make_lanes('recallkeys_spm16k', 'train', batch_size=2, segment_length=256, window_length=64,
               train=True, data_dir=str(tmp_path))
