"""MemLong-style retrieval on MQAR: does the query's window retrieve the store's chunk?

  python -m melodi_jax.experiments.memory_recall.retrieval_hits --workdir=DIR [--documents=256]
      [--pairs=1] [--json]

DIR: a run of the MemLong-style model (memory/retrieval.py) trained on mqar_bytes. For each k of
the test grid (k >= 1), fresh N-pair episodes with the store in window 0 and the query k windows
later: the model reads windows 0..k-1 with its memory carried, then the query's window. The
window's retrieval is a function of the index before it (`retrieval.retrieve`: the top-k chunks
most similar to the newest chunk, the window just before the query's, never the newest itself),
so it is recomputed from the carried index exactly as the model does it. Per k:
- how often the store's chunk (window 0) is still in the index (a full index evicts the chunk
  retrieved least often), and how often it is among the retrieved (hit rate);
- the hit rate of a retrieval that ignores similarity (top_k of the candidates at random), and how
  many chunks compete (k - 1 while the index holds every past window);
- recall (the score's argmax rule) over all queries, over the queries whose window retrieved the
  store's chunk, and over those that did not.
A retrieval that finds the store only at the random rate, with recall high on hits and at chance
on misses, locates the loss: the chunk was stored and is read when retrieved, but the retrieval
key (the mean of the previous window, which holds filler) does not point to it.
"""
from __future__ import annotations

import json
from typing import Sequence

from absl import flags
import numpy as np

from melodi_jax.train import cli


def define_flags() -> None:
  """The command-line flags (defined only when run as a program)."""
  flags.DEFINE_string('workdir', None, 'A MemLong-style training run folder (mqar_bytes).')
  flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')
  flags.DEFINE_integer('documents', 256, 'Episodes per k.')
  flags.DEFINE_integer('pairs', 1, 'N: pairs per episode.')
  flags.DEFINE_bool('json', False, 'Print JSON.')


FLAGS = flags.FLAGS


def find_index(memory) -> dict:
  """The retrieval index (the dict under key retrieval.RetrievalIndex.key) in a memory tree."""
  from melodi_jax.memory import retrieval  # pylint: disable=g-import-not-at-top
  key = retrieval.RetrievalIndex.key
  if isinstance(memory, dict):
    if key in memory:
      return memory[key]
    for value in memory.values():
      found = find_index(value)
      if found is not None:
        return found
  return None


def random_hit_rate(candidates: int, top_k: int) -> float:
  """P(a given candidate is among top_k of `candidates` drawn at random)."""
  return 1.0 if candidates <= top_k else top_k / candidates


def main(argv: Sequence[str]) -> None:
  del argv
  if not FLAGS.workdir:
    raise cli.UserError('--workdir is required: pass the folder of a MemLong-style run')
  import jax  # pylint: disable=g-import-not-at-top
  from melodi_jax.data import mqar  # pylint: disable=g-import-not-at-top
  from melodi_jax.experiments import runs  # pylint: disable=g-import-not-at-top
  from melodi_jax.memory import retrieval  # pylint: disable=g-import-not-at-top
  from melodi_jax.models.baseline_stacks import MemLongStack  # pylint: disable=g-import-not-at-top

  run = runs.restore(FLAGS.workdir, FLAGS.step)
  model, params = run.model, run.params
  if find_index(model.init_memory(1)) is None:
    raise cli.UserError(f'{run.workdir} is not a MemLong-style run (its memory has no retrieval '
                        'index): pass a run trained with models/memlong.gin')
  stack = MemLongStack()   # as bound by the run's config.gin (runs.restore parsed it)
  config = mqar.MQARConfig()
  w = model.window_length
  apply = jax.jit(lambda p, t, m, d: model.apply({'params': p}, t, m, d))
  batch = 32
  rows = []
  for k in [d for d in config.eval_distances if d >= 1]:
    rng = np.random.default_rng([config.seed, 77, k])
    episodes = [mqar.eval_document(rng, config, FLAGS.pairs, k) for _ in range(FLAGS.documents)]
    span = (k + 1) * w
    tokens = np.stack([np.pad(t, (0, max(0, span - len(t))),
                              constant_values=mqar.FILLER_FIRST)[:span]
                       for t, _ in episodes]).astype(np.int32)
    hit, indexed, recalled = [], [], []
    for start in range(0, len(tokens), batch):
      chunk = tokens[start:start + batch]
      lanes = len(chunk)
      starts = np.zeros((lanes, k), bool)
      starts[:, 0] = True
      _, before = apply(params, chunk[:, :k * w], model.init_memory(lanes), starts)
      logits, _ = apply(params, chunk[:, k * w:], before, np.zeros((lanes, 1), bool))
      index = jax.tree.map(np.asarray, find_index(before))
      chosen, found = (np.asarray(a) for a in retrieval.retrieve(index, stack.top_k))
      store_slot = np.where(index['valid'] & (index['written_at'] == 0), 1, 0).argmax(1)
      stored = (index['valid'] & (index['written_at'] == 0)).any(1)
      hit.extend(stored & ((chosen == store_slot[:, None]) & found).any(1))
      indexed.extend(stored)
      predictions = np.asarray(logits).argmax(-1)
      for lane in range(lanes):
        episode = episodes[start + lane][1]
        at = episode.value_positions - k * w
        recalled.append(float(np.mean(predictions[lane, at - 1] == chunk[lane, k * w + at])))
    hit, recalled = np.asarray(hit), np.asarray(recalled)
    candidates = min(k, stack.chunks) - 1
    rows.append({
        'distance': k, 'documents': len(hit), 'candidates': candidates,
        'indexed_rate': float(np.mean(indexed)),   # the store's chunk not yet evicted
        'hit_rate': float(hit.mean()),
        'random_hit_rate': random_hit_rate(candidates, stack.top_k) if candidates else 0.0,
        'recall': float(recalled.mean()),
        'recall_when_retrieved': float(recalled[hit].mean()) if hit.any() else None,
        'recall_when_missed': float(recalled[~hit].mean()) if (~hit).any() else None})
  result = {'workdir': run.workdir, 'step': run.step, 'pairs': FLAGS.pairs,
            'top_k': stack.top_k, 'chunks': stack.chunks, 'chance': 1 / config.value_vocab,
            'rows': rows}
  if FLAGS.json:
    print(json.dumps(result, indent=1))
    return
  print(f'{run.workdir} step {run.step}: N = {FLAGS.pairs}, top-{stack.top_k} of '
        f'{stack.chunks} chunks, chance {result["chance"]:.3f}')
  print('   k  chunks  hit rate (random)  recall  | retrieved  | missed')
  for row in rows:
    def fmt(x):
      return '   -  ' if x is None else f'{x:.3f} '
    print(f'{row["distance"]:4d}  {row["candidates"]:6d}  {row["hit_rate"]:.3f} '
          f'({row["random_hit_rate"]:.3f})      {row["recall"]:.3f}   | '
          f'{fmt(row["recall_when_retrieved"])}    | {fmt(row["recall_when_missed"])}')


if __name__ == '__main__':
  define_flags()
  cli.run(main)
