"""Where each predicted token sits inside its document, for the per-position evaluation: loss
bucketed by document position (what a memory buys shows as loss falling with position).

Computed on the host from `doc_start` alone, which is exact for any stream in the lane format:
a document starts at a window boundary with `doc_start` set and fills its lane contiguously (also
across segments) until it ends; the rest of that window is padding with loss weight 0.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from melodi_jax.errors import UserError

# Lower edges of the buckets after [0, 256): [0, 256), [256, 1k), [1k, 4k), [4k, 16k),
# [16k, 64k), >= 64k. Log-spaced (x4): loss changes fastest near a document's start, and a
# memory's reach (windows, FIFO slots) grows in multiples of the window.
DEFAULT_BOUNDARIES = (256, 1024, 4096, 16384, 65536)


def check_boundaries(boundaries: Sequence[int]) -> tuple[int, ...]:
  """The boundaries as a tuple of ints; UserError unless they are positive and increasing."""
  values = tuple(int(b) for b in boundaries)
  if any(b <= 0 for b in values) or any(a >= b for a, b in zip(values, values[1:])):
    raise UserError(f'TrainConfig.eval_position_buckets={tuple(boundaries)} must be positive and '
                    'strictly increasing, e.g. (256, 1024, 4096, 16384, 65536)')
  return values


def bucket_edges(boundaries: Sequence[int]) -> list[tuple[int, int | None]]:
  """[(start, end)] of every bucket, end None for the last (open) one: K + 1 for K boundaries."""
  starts = [0] + list(boundaries)
  return list(zip(starts, list(boundaries) + [None]))


def bucket_label(start: int, end: int | None) -> str:
  def short(n: int) -> str:
    return f'{n // 1024}k' if n >= 1024 and n % 1024 == 0 else str(n)
  return f'>= {short(start)}' if end is None else f'[{short(start)}, {short(end)})'


class DocumentPositions:
  """Tracks, per lane, how many tokens of the current document came before this segment.

  `next(doc_start)` must see every segment of the stream in order, starting from a fresh stream
  (each lane's first real token starts a document there).
  """

  def __init__(self, batch_size: int, segment_length: int, window_length: int):
    assert segment_length % window_length == 0, (segment_length, window_length)
    self.segment_length, self.window_length = segment_length, window_length
    # Document position of each lane's first token of the next segment; -1: no document yet.
    self._carry = np.full([batch_size], -1, np.int64)

  def next(self, doc_start: np.ndarray) -> np.ndarray:
    """Positions of the predicted tokens of the next segment.

    Args: doc_start bool[B, N].
    Returns: int64[B, T]: at input slot t, the index inside its document of the token predicted
      there (targets[b, t]), i.e. the input token's index + 1; -1 before a lane's first document.
      Padding slots get a value too; their loss weight is 0.
    """
    lanes, windows = doc_start.shape
    w = self.window_length
    assert lanes == len(self._carry) and windows * w == self.segment_length, (
        doc_start.shape, len(self._carry), self.segment_length, w)
    slot = np.arange(self.segment_length)
    window_index = np.arange(windows)
    # The last window at or before each window where a document started (-1: none this segment).
    last_start = np.maximum.accumulate(np.where(doc_start, window_index, -1), axis=1)  # [B, N]
    last_start = np.repeat(last_start, w, axis=1)                                        # [B, T]
    since_start = slot[None, :] - last_start * w                 # tokens since that start
    carried = self._carry[:, None] + slot[None, :]               # continuing a document
    inputs = np.where(last_start >= 0, since_start,
                      np.where(self._carry[:, None] >= 0, carried, -1))
    self._carry = np.where(inputs[:, -1] >= 0, inputs[:, -1] + 1, -1)
    return np.where(inputs >= 0, inputs + 1, -1)
