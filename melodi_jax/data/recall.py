"""The long-range recall task (`recall_bytes`): real book text in which a random 5-digit key is
stated near the start and asked for again exactly k windows later.

  "...intro... the key is 48213. ...book text filler... the key is 48213.  ...tail..."
   |<------------ window 0 ------------>|          k * WINDOW bytes later: |

Positions are in bytes = tokens of the `bytes` vocabulary, measured from the document start
(documents start at a window boundary in every lane, see lanes.py), so the question's digits sit
exactly `k * WINDOW` tokens after the statement's digits, in the same place of their windows. The
statement always ends inside window 0. A key digit is predicted at the token before it, which is
k * WINDOW - 1 tokens after the digit it must copy: k = 1 lies inside a one-window
Transformer-XL cache (W keys back), every k >= 2 beyond what any single layer attends to.

Filler comes from the books corpus of the same split (train/validation/test), ASCII only, with
any "key is" in it rewritten and every digit removed, so that the only key in a document is its
own and its digits are the only digits. Validation/test hold
EXAMPLES_PER_DISTANCE documents for each k in DISTANCES, each with one question (the scored one).

Train documents are denser in what the test scores, so that a small model learns the skill in a
budget a CPU can afford: k is drawn from 1..max(DISTANCES) with P(k) proportional to 1 / k (short
distances, where copying is learned first, are common; every k is seen), and the question is
repeated every k windows up to TRAIN_SPAN windows after the statement, each repeat exactly k
windows after the previous occurrence, so every repeat also needs a memory k windows deep. And
a fraction ECHO_FRACTION of the train documents are "echo" documents: runs of ECHO_RUN bytes,
each a fresh snippet of 8..64 bytes of book text repeated, so that from a run's second snippet
on every byte can be predicted by copying from one snippet back, across window boundaries too.
They teach the copy (induction) circuit the way a dense copy task does; the key digits alone are
too rare a signal for it (one question per document: a few thousand key digits among millions of
tokens). A fresh snippet every run rather than one per document, so that a lane shows a new
pattern every segment or two, as the copy probe's lanes do (results/copy_probe). What was tried
before is in results/recall.md and git.

`recallkeys_bytes` trains on the tokens that must be recalled only (`recalled`):
the key digits of every question and the echoes' repeats.
Everything is deterministic in (split, books corpus).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
from typing import Iterator

import numpy as np

from melodi_jax.data import sources
from melodi_jax.data.paths import SPLITS
from melodi_jax.errors import UserError

WINDOW = 64                          # tokens per window the distances k are counted in
DISTANCES = (1, 2, 4, 8, 16, 32)     # k, in windows, of the scored (validation/test) documents
KEY_DIGITS = 5
PREFIX = b'the key is '
TRAIN_DOCUMENTS = 20000
EXAMPLES_PER_DISTANCE = 64           # validation and test documents per k
TRAIN_SPAN = max(DISTANCES)          # train documents: questions up to this many windows in
ECHO_FRACTION = 0.5                  # train documents that are echoes (no key)
ECHO_BYTES = 1024                    # an echo document's length
ECHO_RUN = 128                       # bytes of one snippet's repeats (a fresh snippet per run)
VERSION = 'recall-v3'


@dataclasses.dataclass(frozen=True)
class RecallExample:
  """One document. Positions are byte (= token) offsets from the document start."""
  name: str
  text: bytes
  key: str             # 5 digits
  distance: int        # k: windows between the statement and the question
  key_position: int    # first key digit of the statement
  query_position: int  # first key digit of the question = key_position + k * window
  questions: int = 1   # the question is repeated every k windows (train documents); the first
                       # one is the scored one
  periods: tuple[int, ...] = ()  # echo documents: the snippet length of each ECHO_RUN-byte run
                                 # (in a run, each byte from the second snippet on repeats the
                                 # byte one snippet before it); () for key documents

  @property
  def digit_positions(self) -> np.ndarray:
    """int[5]: where the question's key digits are (the scored targets)."""
    return self.query_position + np.arange(KEY_DIGITS)

  @property
  def question_positions(self) -> np.ndarray:
    """int[questions]: the first key digit of every question (the first one is query_position)."""
    return self.key_position + (self.query_position - self.key_position) * np.arange(
        1, self.questions + 1)


def recalled(example: RecallExample) -> np.ndarray:
  """bool[len(text)]: the tokens that can only be predicted by recalling an earlier one: the key
  digits of every question, and each echo run's bytes from its second snippet on."""
  mask = np.zeros(len(example.text), bool)
  for at in example.question_positions:
    mask[at:at + KEY_DIGITS] = True
  for run, period in enumerate(example.periods):
    mask[run * ECHO_RUN + period:(run + 1) * ECHO_RUN] = True
  return mask


def _filler(rng: np.random.Generator, pool: bytes, length: int) -> bytes:
  if length <= 0:
    return b''
  start = int(rng.integers(0, len(pool) - length))
  return pool[start:start + length]


def make_example(rng: np.random.Generator, pool: bytes, distance: int, name: str,
                 window: int = WINDOW, questions: int = 1) -> RecallExample:
  """A document whose question comes `distance` windows after the key's statement, repeated
  `questions` times, each repeat `distance` windows after the one before."""
  if distance < 1:
    raise ValueError(f'distance {distance} must be >= 1 window')
  if questions < 1:
    raise ValueError(f'questions {questions} must be >= 1')
  key = ''.join(str(d) for d in rng.integers(0, 10, KEY_DIGITS))
  statement = PREFIX + key.encode() + b'. '
  # The statement ends inside window 0 (intro may be empty).
  intro_length = int(rng.integers(0, window - len(statement) + 1))
  intro = _filler(rng, pool, intro_length - 1) + b' ' if intro_length else b''
  key_position = len(intro) + len(PREFIX)
  query_position = key_position + distance * window
  text = intro + statement
  for question in range(1, questions + 1):
    # Filler up to the question's prefix, so that its digits sit `distance` windows after the
    # previous occurrence's digits.
    filler_length = key_position + question * distance * window - len(PREFIX) - len(text)
    text += _filler(rng, pool, filler_length - 1) + b' ' + PREFIX + key.encode()
    if question < questions:
      text += b'. '
  text += b'. ' + _filler(rng, pool, int(rng.integers(8, 33)))
  example = RecallExample(name, text, key, distance, key_position, query_position, questions)
  for at in [key_position, *example.question_positions]:
    assert text[at:at + KEY_DIGITS] == key.encode(), example
  return example


def make_echo(rng: np.random.Generator, pool: bytes, name: str) -> RecallExample:
  """A train document without a key: ECHO_BYTES / ECHO_RUN runs, each a fresh snippet of 8..64
  bytes of filler repeated to ECHO_RUN bytes."""
  text, periods = b'', []
  for _ in range(-(-ECHO_BYTES // ECHO_RUN)):
    snippet = _filler(rng, pool, int(rng.integers(8, 65)))
    text += (snippet * (-(-ECHO_RUN // len(snippet))))[:ECHO_RUN]
    periods.append(len(snippet))
  return RecallExample(name, text[:ECHO_BYTES], key='', distance=0, key_position=-1,
                       query_position=-1, questions=0, periods=tuple(periods))


def train_distances(rng: np.random.Generator, count: int) -> np.ndarray:
  """int[count] distances k in 1..max(DISTANCES), P(k) proportional to 1 / k."""
  k = np.arange(1, max(DISTANCES) + 1)
  return rng.choice(k, count, p=(1 / k) / np.sum(1 / k))


def filler_pool(documents: Iterator[tuple[str, bytes]]) -> bytes:
  """The split's book text as one ASCII string without any 'key is' in it and without digits
  (verse and line numbers), so that the key's digits are the only digits of a document."""
  text = b'\n'.join(data for _, data in documents)
  text = text.decode('ascii', 'ignore').encode()
  text = re.sub(rb'[0-9]+', b'', text)
  return re.sub(rb'(?i)key(\s+)is', rb'key\1was', text)


def examples(split: str, pool: bytes, *, window: int = WINDOW,
             examples_per_distance: int = EXAMPLES_PER_DISTANCE,
             train_documents: int = TRAIN_DOCUMENTS) -> list[RecallExample]:
  """The documents of a split, deterministic in (split, pool)."""
  if split not in SPLITS:
    raise UserError(f'split {split!r} is not one of {SPLITS}')
  if len(pool) < 4 * window * max(DISTANCES):
    raise UserError(f'recall: {len(pool)} bytes of book text is too little filler; build the '
                    'books corpus with `bash launch/prepare_data.sh --corpora=books`')
  rng = np.random.default_rng([SPLITS.index(split), 7])
  if split != 'train':
    distances = np.repeat(DISTANCES, examples_per_distance)
    return [make_example(rng, pool, int(k), f'recall/{split}/{i:05d}_k{int(k)}', window)
            for i, k in enumerate(distances)]
  distances = train_distances(rng, train_documents)
  echo = rng.random(train_documents) < ECHO_FRACTION
  return [make_echo(rng, pool, f'recall/train/{i:05d}_echo') if echo[i] else
          make_example(rng, pool, int(k), f'recall/train/{i:05d}_k{int(k)}', window,
                       max(1, TRAIN_SPAN // int(k)))
          for i, k in enumerate(distances)]


@functools.lru_cache(maxsize=4)
def _cached_examples(split: str, data_dir: str | None) -> tuple[RecallExample, ...]:
  books = sources.corpus_source('books', split, data_dir)
  return tuple(examples(split, filler_pool(books.read())))


def load_examples(split: str, data_dir: str | None = None) -> list[RecallExample]:
  """The recall documents of `split`, with filler from the built books corpus."""
  return list(_cached_examples(split, data_dir))


def with_recall_weights(documents, split: str, data_dir: str | None):
  """`documents` (the recall documents of `split`, bytes vocabulary: a token is a byte) with
  target weight 1 on the tokens that can only be predicted by recalling an earlier one
  (`recalled`: question key digits, echo repeats), 0 elsewhere (task `recallkeys_bytes`). Book
  filler and each run's first snippet carry no loss (why: launch/experiments/README.md)."""
  weights = np.zeros(documents.tokens.shape, np.float32)
  for index, example in enumerate(load_examples(split, data_dir)):
    assert documents.names[index] == example.name, (documents.names[index], example.name)
    start = int(documents.offsets[index])
    weights[start:start + len(example.text)] = recalled(example)
  return dataclasses.replace(documents, target_weights=weights)


def recall_source(split: str, data_dir: str | None = None) -> sources.DocumentSource:
  """A DocumentSource over the recall documents of `split` (task `recall_bytes`)."""
  books = sources.corpus_source('books', split, data_dir)
  fingerprint = hashlib.sha256(
      f'{VERSION}\0{split}\0{books.fingerprint}\0{WINDOW}\0{DISTANCES}\0'
      f'{EXAMPLES_PER_DISTANCE}\0{TRAIN_DOCUMENTS}\0{TRAIN_SPAN}\0{ECHO_FRACTION}\0'
      f'{ECHO_BYTES}\0{ECHO_RUN}'.encode()).hexdigest()

  def read() -> Iterator[tuple[str, bytes]]:
    for example in load_examples(split, data_dir):
      yield example.name, example.text

  return sources.DocumentSource(f'recall/{split}', fingerprint, read, cacheable=False)
