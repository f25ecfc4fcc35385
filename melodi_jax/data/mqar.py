"""Multi-query associative recall laid across windows (task `mqar_bytes`).

An episode: a store region of N key -> value pairs, filler, then a query region that presents the
same N keys in a new order, each followed by its value. The query region starts exactly k windows
after the store region (k = 0: right after it, in the same window), so a value can only be
predicted by a model whose attention, cache or memory reaches k windows back. Loss (and the score)
is on the query region's values only.

  window 0                         window k
  |..o [k1 v1 k2 v2 .. kN vN] ...|...|..o [k2 v2 kN vN .. k1 v1] ...
                                        ^ o + k * W (k >= 1)

Token ids live in the bytes vocabulary (256 ids) in three disjoint sets: filler
[FILLER_FIRST, +filler_vocab), keys [KEY_FIRST, +key_vocab), values [VALUE_FIRST, +value_vocab).
A key is `key_tokens` ids (the keys of one document are distinct); a value is one id. Optional
distractors are extra pairs with keys that are never queried, placed in the filler.

Evaluation documents (validation/test) hold one episode at the document start with the store at
a random offset o of window 0; test has `eval_documents` per (N, k) of `eval_pairs` x
`eval_distances`, validation (the training curve) `validation_documents` per (N, k) of
`eval_pairs` x the train mix's `distances`.
Train documents are `document_tokens` long (set it to the training segment: then every document
is one segment, store and query of every episode lie in the same segment, and the loss's gradient
reaches every memory write); each holds as many episodes as fit, one after the other (k = 0
episodes packed several to a window), with the train mix of N and k, every key distinct within
the document (earlier episodes' pairs are then distractors, never conflicting answers). A store
(and for k = 0 its query) never crosses a window boundary. Deterministic in (config, split).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib

import gin
import numpy as np

from melodi_jax.data.lanes import Documents
from melodi_jax.data.paths import SPLITS
from melodi_jax.errors import UserError

FILLER_FIRST = 32
KEY_FIRST = 128
VALUE_FIRST = 192
VERSION = 'mqar-v1'


@gin.configurable
@dataclasses.dataclass(frozen=True)
class MQARConfig:
  """The task family; every field may be bound in gin (`MQARConfig.distances = (0,)`)."""
  window_length: int = 64                  # W the distances k are counted in (= the model's W)
  num_pairs: tuple[int, ...] = (1, 4, 16)  # train mix of N (uniform)
  distances: tuple[int, ...] = (0, 1, 2, 4)  # train mix of k in windows (uniform)
  document_tokens: int = 512               # train document length (use the training segment T)
  key_tokens: int = 1                      # ids per key
  key_vocab: int = 64
  value_vocab: int = 64                    # chance accuracy = 1 / value_vocab
  filler_vocab: int = 64
  distractors: int = 0                     # unqueried pairs in an episode's filler
  train_documents: int = 8192
  eval_pairs: tuple[int, ...] = (1, 4, 16)
  eval_distances: tuple[int, ...] = (0, 1, 2, 4, 8, 16, 32, 64)
  eval_documents: int = 64                 # test documents per (N, k)
  validation_documents: int = 16           # validation documents per (N, k of the train mix)
  seed: int = 0

  def validate(self) -> None:
    """Raises UserError naming the gin parameter when the task cannot be laid out."""
    w = self.window_length
    if not (0 < self.filler_vocab <= KEY_FIRST - FILLER_FIRST and 0 < self.key_vocab <= VALUE_FIRST
            - KEY_FIRST and 0 < self.value_vocab <= 256 - VALUE_FIRST):
      raise UserError('MQARConfig.filler_vocab/key_vocab/value_vocab must be in 1..96/1..64/1..64')
    if self.key_tokens < 1 or self.distractors < 0:
      raise UserError('MQARConfig.key_tokens must be >= 1 and MQARConfig.distractors >= 0')
    for n in set(self.num_pairs) | set(self.eval_pairs):
      if n < 1 or n + self.distractors > self.key_vocab ** self.key_tokens:
        raise UserError(f'MQARConfig: N = {n} pairs (+ {self.distractors} distractors) need more '
                        f'distinct keys than key_vocab ** key_tokens; raise MQARConfig.key_vocab')
      if n * (self.key_tokens + 1) > w:
        raise UserError(f'MQARConfig: a store of N = {n} pairs is {n * (self.key_tokens + 1)} '
                        f'tokens, more than a window ({w}); use fewer pairs or a longer window')
    if min(self.distances + self.eval_distances) < 0:
      raise UserError('MQARConfig.distances / eval_distances must be >= 0 windows')
    longest = max(episode_windows(self, n, k) for n in self.num_pairs for k in self.distances)
    if self.document_tokens % w or self.document_tokens < longest * w:
      raise UserError(f'MQARConfig.document_tokens = {self.document_tokens} must be a multiple of '
                      f'the window ({w}) holding the longest train episode ({longest} windows): '
                      f'set it to the training segment length, or train on shorter distances')
    if not self.cells():
      raise UserError('MQARConfig: no (eval_pairs, eval_distances) cell fits a window')

  def cells(self, split: str = 'test') -> list[tuple[int, int]]:
    """The (N, k) grid of an evaluation split, k = 0 only where store + query fit a window: test
    is eval_pairs x eval_distances; validation (the training curve) eval_pairs x the train mix's
    distances, which fit a training segment."""
    distances = self.distances if split == 'validation' else self.eval_distances
    return [(n, k) for n in self.eval_pairs for k in sorted(set(distances))
            if k > 0 or 2 * n * (self.key_tokens + 1) <= self.window_length]

  def fingerprint(self) -> str:
    return hashlib.sha256(f'{VERSION}\0{dataclasses.astuple(self)}'.encode()).hexdigest()


def episode_windows(config: MQARConfig, n: int, k: int) -> int:
  """Windows an episode spans (store window through the window holding its last value)."""
  # k = 0: store and query fit window 0 (offset <= W - 2 region); k >= 1: the store starts at
  # offset o <= W - region of its window, so the query region [o + k W, o + k W + region) ends
  # inside window k.
  del n
  return k + 1


@dataclasses.dataclass(frozen=True)
class Episode:
  """Where one episode's tokens are, as offsets from its document's start."""
  pairs: int                  # N
  distance: int               # k, windows
  store: int                  # first token of the store region
  query: int                  # first token of the query region (= store + k W for k >= 1)
  value_positions: np.ndarray  # int[N]: the query region's value tokens (the scored targets)
  source_positions: np.ndarray  # int[N]: the value each query must recall, in the store


def _write_episode(tokens: np.ndarray, rng: np.random.Generator, config: MQARConfig, start: int,
                   n: int, k: int, keys: np.ndarray, distractor_keys: np.ndarray) -> Episode:
  """Writes an episode into `tokens` (already filler) with its store at `start`."""
  kt, w = config.key_tokens, config.window_length
  region = n * (kt + 1)
  values = VALUE_FIRST + rng.integers(0, config.value_vocab, n)
  query = start + region if k == 0 else start + k * w
  order = rng.permutation(n)  # the query region asks pair order[i] i-th
  for at, pair_order in ((start, np.arange(n)), (query, order)):
    for i, pair in enumerate(pair_order):
      tokens[at + i * (kt + 1):at + i * (kt + 1) + kt] = keys[pair]
      tokens[at + i * (kt + 1) + kt] = values[pair]
  if len(distractor_keys):
    # Between the store's end and the query's start, non-overlapping slots of kt + 1 tokens.
    gap_slots = (query - (start + region)) // (kt + 1)
    if gap_slots < len(distractor_keys):
      raise UserError(f'MQARConfig.distractors = {len(distractor_keys)} do not fit between store '
                      f'and query at k = {k}; use fewer distractors or k >= 1')
    for key, slot in zip(distractor_keys, rng.choice(gap_slots, len(distractor_keys), False)):
      at = start + region + slot * (kt + 1)
      tokens[at:at + kt] = key
      tokens[at + kt] = VALUE_FIRST + rng.integers(0, config.value_vocab)
  value_positions = query + np.arange(n) * (kt + 1) + kt
  source_positions = start + order * (kt + 1) + kt
  return Episode(n, k, start, query, value_positions, source_positions)


def _draw_keys(rng: np.random.Generator, config: MQARConfig, count: int,
               used: set[tuple[int, ...]]) -> np.ndarray:
  """int[count, key_tokens] distinct keys not in `used` (which is updated)."""
  keys = []
  while len(keys) < count:
    key = tuple(int(x) for x in KEY_FIRST + rng.integers(0, config.key_vocab, config.key_tokens))
    if key not in used:
      used.add(key)
      keys.append(key)
  return np.asarray(keys, np.int32).reshape(count, config.key_tokens)


def _filler(rng: np.random.Generator, config: MQARConfig, length: int) -> np.ndarray:
  return (FILLER_FIRST + rng.integers(0, config.filler_vocab, length)).astype(np.int32)


def eval_document(rng: np.random.Generator, config: MQARConfig, n: int,
                  k: int) -> tuple[np.ndarray, Episode]:
  """One episode at the document start: the store at a random offset of window 0, the query k
  windows later, one filler token after the last value (a document's last token has no target)."""
  region = n * (config.key_tokens + 1)
  w = config.window_length
  offset = int(rng.integers(0, w - (2 * region if k == 0 else region) + 1))
  end = offset + (2 * region if k == 0 else k * w + region) + 1
  tokens = _filler(rng, config, end)
  keys = _draw_keys(rng, config, n + config.distractors, set())
  episode = _write_episode(tokens, rng, config, offset, n, k, keys[:n], keys[n:])
  return tokens, episode


def _next_start(rng: np.random.Generator, at: int, w: int, length: int) -> int:
  """Where a region of `length` tokens that must lie inside one window starts, at or after token
  `at`: after a gap of 0..3 filler tokens in the current window if it fits there, else 0..3
  tokens into the next window."""
  room = w - at % w - length
  if room >= 0:
    return at + int(rng.integers(0, min(3, room) + 1))
  return (at // w + 1) * w + int(rng.integers(0, min(3, w - length) + 1))


def train_document(rng: np.random.Generator,
                   config: MQARConfig) -> tuple[np.ndarray, list[Episode]]:
  """`document_tokens` tokens holding episodes of the train mix one after another, every key
  distinct within the document. An episode's store (k >= 1) or its store and query (k = 0) lie
  inside one window; the next episode starts right after the previous one's query (k = 0
  episodes share a window when they fit), so the values to predict are dense."""
  w, kt = config.window_length, config.key_tokens
  tokens = _filler(rng, config, config.document_tokens)
  used: set[tuple[int, ...]] = set()
  episodes, at, misses = [], 0, 0
  capacity = config.key_vocab ** kt
  while misses < 8:  # stop after 8 drawn episodes that did not fit in what is left
    n = int(rng.choice(config.num_pairs))
    k = int(rng.choice(config.distances))
    region = n * (kt + 1)
    start = _next_start(rng, at, w, 2 * region if k == 0 else region)
    end = start + (2 * region if k == 0 else k * w + region)  # one past the last value
    # The document's last token has no target: an episode never ends on it.
    if end > config.document_tokens - 1 or len(used) + n + config.distractors > capacity:
      misses += 1
      continue
    keys = _draw_keys(rng, config, n + config.distractors, used)
    episodes.append(_write_episode(tokens, rng, config, start, n, k, keys[:n], keys[n:]))
    at = end
  if not episodes:
    raise UserError('MQARConfig: no train episode fits MQARConfig.document_tokens; raise it')
  return tokens, episodes


@functools.lru_cache(maxsize=8)
def split_documents(config: MQARConfig, split: str) -> tuple[tuple[np.ndarray, ...],
                                                             tuple[tuple[Episode, ...], ...],
                                                             tuple[str, ...]]:
  """(tokens per document, episodes per document, names) of a split; deterministic."""
  if split not in SPLITS:
    raise UserError(f'split {split!r} is not one of {SPLITS}')
  config.validate()
  rng = np.random.default_rng([config.seed, SPLITS.index(split), 11])
  docs, episodes, names = [], [], []
  if split == 'train':
    for i in range(config.train_documents):
      tokens, eps = train_document(rng, config)
      docs.append(tokens)
      episodes.append(tuple(eps))
      names.append(f'mqar/train/{i:06d}')
  else:
    count = config.validation_documents if split == 'validation' else config.eval_documents
    for n, k in config.cells(split):
      for i in range(count):
        tokens, episode = eval_document(rng, config, n, k)
        docs.append(tokens)
        episodes.append((episode,))
        names.append(f'mqar/{split}/n{n}_k{k}_{i:04d}')
  return tuple(docs), tuple(episodes), tuple(names)


def documents(config: MQARConfig, split: str) -> Documents:
  """The split as lane-ready Documents, target weight 1 on the query regions' values only."""
  docs, episodes, names = split_documents(config, split)
  result = Documents.from_list(docs, names)
  weights = np.zeros(len(result.tokens), np.float32)
  for index, eps in enumerate(episodes):
    for episode in eps:
      weights[result.offsets[index] + episode.value_positions] = 1.0
  return dataclasses.replace(result, target_weights=weights)


def chance(config: MQARConfig) -> float:
  """Accuracy of guessing a value uniformly."""
  return 1.0 / config.value_vocab

