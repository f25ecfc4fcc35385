"""Scores multi-query associative recall (melodi_jax/data/mqar.py) per (N pairs, k windows).

  python -m melodi_jax.experiments.memory_recall.score --workdir=DIR [--split=test] [--documents=N]
  -> DIR/eval/mqar_<split>_<step>.json

`score` is the library function: every evaluation document is read from its start in its own
lane, segment after segment with the memory carried (reset at the document start), teacher-forced;
a value counts as recalled when the argmax over the whole vocabulary of the model's next-token
distribution at the key before it is that value. Accuracy per (N, k) is the mean over documents
of the fraction of its N queries recalled, with the standard error over documents. Each query's
distance to the value it must recall (in tokens) is kept too, so accuracy can be read against a
model's reach in tokens (`by_source_windows`: accuracy by how many whole windows back the value is).
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Sequence

from absl import flags
import numpy as np

from melodi_jax.train import cli

# apply_fn(tokens int32[B, T], memory, doc_start bool[B, T / W]) -> (logits float[B, T, V], memory)
ApplyFn = Callable[[np.ndarray, Any, np.ndarray], tuple[Any, Any]]


@dataclasses.dataclass
class CellScore:
  pairs: int                 # N
  distance: int              # k, windows
  documents: int
  accuracy: float            # mean over documents of the recalled fraction of its N values
  standard_error: float      # over documents
  source_windows: dict[str, list[float]]  # whole windows between query and source -> [hits, count]


def score(apply_fn: ApplyFn, init_memory: Callable[[int], Any], documents: Sequence[np.ndarray],
          episodes: Sequence[Any], *, window_length: int, segment_length: int,
          batch_size: int) -> list[CellScore]:
  """Teacher-forced value accuracy per (N, k) cell.

  Args:
    apply_fn: the model on one segment (see ApplyFn); memory is carried from call to call.
    init_memory: batch_size -> the memory of fresh lanes.
    documents: int[L_i] token ids of each evaluation document (one episode each).
    episodes: the mqar.Episode of each document.
    window_length, segment_length: the model's W and the T it reads per call (W divides T).
    batch_size: lanes per call; documents of one cell share batches.
  """
  if segment_length % window_length:
    raise ValueError(f'segment_length {segment_length} is not a multiple of {window_length}')
  cells: dict[tuple[int, int], list[int]] = {}
  for index, episode in enumerate(episodes):
    cells.setdefault((episode.pairs, episode.distance), []).append(index)
  results = []
  for (pairs, distance), indices in sorted(cells.items()):
    per_document, by_windows = [], {}
    for start in range(0, len(indices), batch_size):
      chunk = indices[start:start + batch_size]
      predictions = _predict(apply_fn, init_memory, [documents[i] for i in chunk],
                             window_length, segment_length, batch_size)
      for lane, index in enumerate(chunk):
        episode, tokens = episodes[index], documents[index]
        hits = predictions[lane, episode.value_positions - 1] == tokens[episode.value_positions]
        per_document.append(float(hits.mean()))
        windows_back = (episode.value_positions - 1 - episode.source_positions) // window_length
        for back, hit in zip(windows_back, hits):
          entry = by_windows.setdefault(str(int(back)), [0.0, 0.0])
          entry[0] += float(hit)
          entry[1] += 1.0
    values = np.asarray(per_document)
    results.append(CellScore(
        pairs=pairs, distance=distance, documents=len(values), accuracy=float(values.mean()),
        standard_error=float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else
        float('nan'),
        source_windows=dict(sorted(by_windows.items(), key=lambda kv: int(kv[0])))))
  return results


def _predict(apply_fn, init_memory, documents, window_length, segment_length, batch_size):
  """int32[B, L]: the argmax next token after every position of each lane's document."""
  length = -(-max(len(d) for d in documents) // segment_length) * segment_length
  tokens = np.zeros((batch_size, length), np.int32)
  for lane, document in enumerate(documents):
    tokens[lane, :len(document)] = document
  doc_start = np.zeros((batch_size, length // window_length), bool)
  doc_start[:, 0] = True  # a fresh document in every lane (padding lanes too)
  predictions = np.zeros((batch_size, length), np.int32)
  memory = init_memory(batch_size)
  per_segment = segment_length // window_length
  for segment in range(length // segment_length):
    cut = slice(segment * segment_length, (segment + 1) * segment_length)
    logits, memory = apply_fn(tokens[:, cut], memory,
                              doc_start[:, segment * per_segment:(segment + 1) * per_segment])
    predictions[:, cut] = np.argmax(np.asarray(logits), axis=-1)
  return predictions


def define_flags() -> None:
  """The command-line flags (defined only when run as a program: the library stays importable
  beside other entry points)."""
  flags.DEFINE_string('workdir', None, 'A training run folder (trained on mqar_bytes).')
  flags.DEFINE_string('split', 'test', 'MQAR split to score.')
  flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')
  flags.DEFINE_integer('batch_size', None, "Lanes per call (default: the run's eval batch).")
  flags.DEFINE_integer('documents', None, 'Score only the first N documents of each (N, k) cell.')
  flags.DEFINE_list('pairs', None, 'Score only the cells with these N (default: every N).')
  flags.DEFINE_bool('force', False, 'Score again even if the result file exists.')
  flags.DEFINE_bool('without_cross', False, 'Ablation: every gated cross memory (MELODI long-term, '
                    'Memorizing kNN, ...) switched off by setting its gate logits to +30, so those '
                    'layers attend to themselves only; the result file ends in _without_cross.')


FLAGS = flags.FLAGS


def main(argv: Sequence[str]) -> None:
  del argv
  if not FLAGS.workdir:
    raise cli.UserError('--workdir is required: pass the folder of a training run')
  import jax  # pylint: disable=g-import-not-at-top
  from melodi_jax.data import mqar  # pylint: disable=g-import-not-at-top
  from melodi_jax.experiments import runs  # pylint: disable=g-import-not-at-top

  run = runs.restore(FLAGS.workdir, FLAGS.step, FLAGS.batch_size)
  only = f'_n{"-".join(FLAGS.pairs)}' if FLAGS.pairs else ''  # a partial grid is its own file
  only += '_without_cross' if FLAGS.without_cross else ''
  path = os.path.join(run.workdir, 'eval', f'mqar_{FLAGS.split}_{run.step}{only}.json')
  if os.path.isfile(path) and not FLAGS.force:
    print(f'{path} exists: skipped (--force to score again)')
    return
  config = mqar.MQARConfig()  # as bound by the run's config.gin (runs.restore parsed it)
  if config.window_length != run.model.window_length:
    raise cli.UserError(f'{run.workdir}/config.gin binds MQARConfig.window_length = '
                        f'{config.window_length} but the model window is '
                        f'{run.model.window_length}; retrain with matching values')
  documents, episodes, _ = mqar.split_documents(config, FLAGS.split)
  keep, seen = [], {}
  for index, (episode,) in enumerate(episodes):
    cell = (episode.pairs, episode.distance)
    seen[cell] = seen.get(cell, 0) + 1
    if ((FLAGS.documents is None or seen[cell] <= FLAGS.documents) and
        (not FLAGS.pairs or str(episode.pairs) in FLAGS.pairs)):
      keep.append(index)
  model, params = run.model, run.params
  if FLAGS.without_cross:
    params = runs.without_cross(params)
  apply = jax.jit(lambda p, tokens, memory, doc_start: model.apply({'params': p}, tokens, memory,
                                                                     doc_start))
  cells = score(lambda tokens, memory, doc_start: apply(params, tokens, memory, doc_start),
                model.init_memory, [documents[i] for i in keep], [episodes[i][0] for i in keep],
                window_length=model.window_length,
                segment_length=run.train_config.segment_length,
                batch_size=FLAGS.batch_size or run.train_config.eval_batch)
  result = {'task': 'mqar_bytes', 'split': FLAGS.split, 'step': run.step,
            'chance': mqar.chance(config), 'window_length': model.window_length,
            'segment_length': run.train_config.segment_length,
            'config': dataclasses.asdict(config),
            'cells': [dataclasses.asdict(cell) for cell in cells]}
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path + '.tmp', 'w', encoding='utf-8') as f:
    json.dump(result, f, indent=1)
  os.replace(path + '.tmp', path)
  for cell in cells:
    print(f'N = {cell.pairs:2d}, k = {cell.distance:2d} windows: accuracy {cell.accuracy:.3f} '
          f'+- {cell.standard_error:.3f} ({cell.documents} documents)')
  print(f'-> {path}')


if __name__ == '__main__':
  define_flags()
  cli.run(main)
