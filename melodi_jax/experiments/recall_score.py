"""Scoring the long-range recall task (melodi_jax/data/recall.py) and its command line.

  python -m melodi_jax.experiments.recall_score --workdir=DIR [--split=test] [--examples_per_distance=N]
  -> DIR/eval/recall_<split>_<step>.json

`score` is the library function: the model reads each document from its start, segment by
segment with its memory carried (reset at the document start), teacher-forced; a key digit counts
as recalled when the argmax of the model's next-token distribution at the token before it is that
digit. Accuracy is reported per distance k: over digits, and over whole keys (all 5 right).
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Sequence

import numpy as np

# apply_fn(tokens int32[B, T], memory, doc_start bool[B, T / W]) -> (logits float[B, T, V], memory)
ApplyFn = Callable[[np.ndarray, Any, np.ndarray], tuple[Any, Any]]


@dataclasses.dataclass
class DistanceScore:
  distance: int
  examples: int
  digit_accuracy: float          # over examples x 5 digits
  key_accuracy: float            # examples with all 5 digits right
  per_digit_accuracy: list[float]  # digit 1..5 (digit 1 has only the question as its cue)


def score(apply_fn: ApplyFn, init_memory: Callable[[int], Any], examples: Sequence[Any], *,
          window_length: int, segment_length: int, batch_size: int,
          example_window: int | None = None) -> dict[int, DistanceScore]:
  """Teacher-forced key-digit accuracy per distance k.

  Args:
    apply_fn: the model on one segment (see ApplyFn); memory is carried from call to call.
    init_memory: batch_size -> the memory of fresh lanes.
    examples: recall.RecallExample documents (text bytes = tokens of the bytes vocabulary).
    window_length, segment_length: the model's W and the T it reads per call (W divides T).
    batch_size: lanes per call; documents of one distance share batches.
    example_window: the window the examples' distances were made with (checked against W).
  Returns:
    {k: DistanceScore}.
  """
  if segment_length % window_length:
    raise ValueError(f'segment_length {segment_length} is not a multiple of the window '
                     f'{window_length}')
  if example_window is not None and example_window != window_length:
    raise ValueError(f'the recall documents count distances in windows of {example_window} '
                     f'tokens but the model reads windows of {window_length}; train the model '
                     f'with ModelConfig.window_length = {example_window}')
  by_distance: dict[int, list] = {}
  for example in examples:
    by_distance.setdefault(int(example.distance), []).append(example)
  scores = {}
  for distance in sorted(by_distance):
    group = by_distance[distance]
    hits = []  # bool[5] per example
    for start in range(0, len(group), batch_size):
      hits.extend(_score_batch(apply_fn, init_memory, group[start:start + batch_size],
                               window_length, segment_length, batch_size))
    hits = np.asarray(hits, bool)
    scores[distance] = DistanceScore(
        distance=distance, examples=len(group), digit_accuracy=float(hits.mean()),
        key_accuracy=float(hits.all(axis=1).mean()),
        per_digit_accuracy=[float(x) for x in hits.mean(axis=0)])
  return scores


def _score_batch(apply_fn, init_memory, batch, window_length, segment_length, batch_size):
  length = max(len(example.text) for example in batch)
  length = -(-length // segment_length) * segment_length
  tokens = np.zeros((batch_size, length), np.int32)
  for lane, example in enumerate(batch):
    tokens[lane, :len(example.text)] = np.frombuffer(example.text, np.uint8)
  windows = length // window_length
  doc_start = np.zeros((batch_size, windows), bool)
  doc_start[:, 0] = True                       # a fresh document in every lane (padding lanes too)
  predictions = np.zeros((batch_size, length), np.int32)  # [b, t]: argmax next token after t
  memory = init_memory(batch_size)
  per_segment = segment_length // window_length
  for segment in range(length // segment_length):
    cut = slice(segment * segment_length, (segment + 1) * segment_length)
    logits, memory = apply_fn(tokens[:, cut], memory,
                              doc_start[:, segment * per_segment:(segment + 1) * per_segment])
    predictions[:, cut] = np.argmax(np.asarray(logits), axis=-1)
  hits = []
  for lane, example in enumerate(batch):
    positions = example.digit_positions
    targets = tokens[lane, positions]
    hits.append(predictions[lane, positions - 1] == targets)
  return hits


def reach_note(model_config) -> str:
  """How far back a model can in principle see, from its config (for the recall table)."""
  stack = model_config.stack
  kind = type(stack).__name__
  window, layers = model_config.window_length, model_config.num_layers
  xl_reach = layers * window   # memory/xl_cache.py: span W + 1, the W tokens before and itself
  xl = (f'each layer attends to the {window} tokens before a token, so {layers} layers reach '
        f'at most {xl_reach} tokens = {xl_reach / window:g} windows back')
  if kind == 'TransformerXLStack':
    return f'{xl}; every k > {xl_reach // window} is out of reach.'
  if kind == 'MemorizingStack':
    return (f'{xl}, plus {stack.memory_slots} past keys/values in layer '
            f'{stack.memory_layer} = the last {stack.memory_slots // window} windows.')
  if kind == 'MelodiStack':
    long = (f'a long-term FIFO of {stack.long_term_slots} slots ({stack.long_term_increment} per '
            f'window) = the last {stack.long_term_slots // max(stack.long_term_increment, 1)} '
            f'windows' if stack.long_term_layers else 'no long-term layer')
    return (f'short-term memory of {stack.short_term_slots} tokens per layer carried '
            f'window to window (compressive, no fixed horizon), {long}.')
  return f'{kind}: see its config.'


def main(argv: Sequence[str] | None = None) -> None:
  from absl import flags  # pylint: disable=g-import-not-at-top
  from melodi_jax.train import cli  # pylint: disable=g-import-not-at-top
  del argv
  flags_ = flags.FLAGS
  if not flags_.workdir:
    raise cli.UserError('--workdir is required: pass the folder of a training run')
  import jax  # pylint: disable=g-import-not-at-top
  from melodi_jax.data import recall  # pylint: disable=g-import-not-at-top
  from melodi_jax.experiments import runs  # pylint: disable=g-import-not-at-top

  run = runs.restore(flags_.workdir, flags_.step, flags_.batch_size)
  path = os.path.join(run.workdir, 'eval', f'recall_{flags_.split}_{run.step}.json')
  if os.path.isfile(path) and not flags_.force:
    print(f'{path} exists: skipped (--force to score again)')
    return
  examples = recall.load_examples(flags_.split)
  if flags_.examples_per_distance:
    kept: dict[int, int] = {}
    chosen = []
    for example in examples:
      if kept.get(example.distance, 0) < flags_.examples_per_distance:
        kept[example.distance] = kept.get(example.distance, 0) + 1
        chosen.append(example)
    examples = chosen
  model, params = run.model, run.params
  apply = jax.jit(lambda p, tokens, memory, doc_start: model.apply({'params': p}, tokens, memory,
                                                                     doc_start))
  batch = flags_.batch_size or run.train_config.eval_batch
  scores = score(lambda tokens, memory, doc_start: apply(params, tokens, memory, doc_start),
                 model.init_memory, examples, window_length=model.window_length,
                 segment_length=run.train_config.segment_length, batch_size=batch,
                 example_window=recall.WINDOW)
  per_distance = {}
  for k, s in scores.items():
    per_distance[str(k)] = dataclasses.asdict(s)
  result = {'task': 'recall_bytes', 'split': flags_.split, 'step': run.step,
            'examples_per_distance': max(s.examples for s in scores.values()),
            'window_length': model.window_length,
            'segment_length': run.train_config.segment_length,
            'reach_note': reach_note(model.config), 'by_distance': per_distance}
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path + '.tmp', 'w', encoding='utf-8') as f:
    json.dump(result, f, indent=1)
  os.replace(path + '.tmp', path)
  for k, s in scores.items():
    print(f'k = {k:2d} windows: digit accuracy {s.digit_accuracy:.3f}, key accuracy '
          f'{s.key_accuracy:.3f} ({s.examples} documents)')
  print(f'-> {path}')


def _define_flags():
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string('workdir', None, 'A training run folder (trained on recall_bytes).')
  flags.DEFINE_string('split', 'test', 'Recall split to score.')
  flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')
  flags.DEFINE_integer('batch_size', None, 'Lanes per call (default: the run\'s eval batch).')
  flags.DEFINE_integer('examples_per_distance', None, 'Score only the first N documents per k.')
  flags.DEFINE_bool('force', False, 'Score again even if the result file exists.')


if __name__ == '__main__':
  from melodi_jax.train import cli as _cli  # pylint: disable=g-import-not-at-top
  _define_flags()
  _cli.run(lambda argv: main(argv))
