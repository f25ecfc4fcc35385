"""`python -m melodi_jax.summary --workdir=DIR [--split=validation]`

A training run in a few lines a person can read: what was trained (model, size, tokens, time),
its latest evaluation with a scale to read it against (uniform guessing, and a byte-unigram
model measured now on the same documents), where its files are, and what to run next.
launch/quickstart.sh ends with it. Reads the run folder; trains and evaluates nothing.
"""
from __future__ import annotations

import glob
import json
import math
import os

from absl import flags
import numpy as np

from melodi_jax.train import cli

flags.DEFINE_string('workdir', None, 'Folder of a training run.')
flags.DEFINE_string('split', None, 'Report the newest evaluation of this split (default: the '
                    'newest evaluation of any split).')
FLAGS = flags.FLAGS

MODEL_NAMES = {'MelodiStack': 'MELODI', 'VanillaStack': 'windowed transformer (no memory)',
               'TransformerXLStack': 'Transformer-XL', 'MemorizingStack': 'Memorizing Transformer',
               'BlockRecurrentStack': 'Block-Recurrent Transformer',
               'MemLongStack': 'MemLong-style retrieval'}


def _read_jsonl(path: str) -> list[dict]:
  if not os.path.isfile(path):
    return []
  with open(path, encoding='utf-8') as f:
    return [json.loads(line) for line in f if line.strip()]


def latest_eval(workdir: str, split: str | None) -> tuple[str, dict] | None:
  """(path, result) of the evaluation at the highest step (of `split`), newest file on a tie."""
  found = []
  for path in glob.glob(os.path.join(workdir, 'eval', '*.json')):
    with open(path, encoding='utf-8') as f:
      result = json.load(f)
    if 'bits_per_byte' in result and (split is None or result.get('split') == split):
      found.append((result.get('step', -1), os.path.getmtime(path), path, result))
  if not found:
    return None
  _, _, path, result = max(found, key=lambda item: item[:2])
  return path, result


def unigram_bits_per_byte(task: str, split: str) -> float | None:
  """Bits/byte of a unigram model (token frequencies of the train split, add-one smoothed) on
  the targets the evaluation scores: every token of `split` but each document's first, weighted
  and counted in bytes as the evaluator does. None when the task's data cannot be read here."""
  from melodi_jax import data  # pylint: disable=g-import-not-at-top
  try:
    def stream(name):  # window 1: the documents only, no packing (and no short-document notes)
      return data.make_lanes(task, name, batch_size=1, segment_length=1, window_length=1,
                             train=False)
    train, scored = stream('train'), stream(split)
  except cli.UserError:
    return None
  vocab = max(len(train.token_bytes), int(train.documents.tokens.max()) + 1)
  counts = np.bincount(np.asarray(train.documents.tokens, np.int64), minlength=vocab)
  log_p = np.log((counts + 1.0) / (counts.sum() + vocab))
  documents = scored.documents
  tokens = np.asarray(documents.tokens, np.int64)
  weights = (np.ones(len(tokens)) if documents.target_weights is None
             else np.asarray(documents.target_weights, np.float64))
  weights[documents.offsets[:-1]] = 0.0  # a document's first token has no target
  token_bytes = np.asarray(scored.token_bytes, np.float64)
  nats = -np.sum(weights * log_p[tokens])
  num_bytes = np.sum(weights * token_bytes[tokens])
  return float(nats / math.log(2) / num_bytes) if num_bytes else None


def _clock(seconds: float) -> str:
  seconds = int(round(seconds))
  return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'


def _checkpoint_facts(workdir: str) -> tuple[list[int], int | None, dict]:
  """(saved steps, parameter count, progress of the newest checkpoint) from orbax metadata."""
  import jax  # pylint: disable=g-import-not-at-top
  from melodi_jax.train import checkpoints  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(checkpoints.checkpoint_dir(workdir)):
    return [], None, {}
  checkpointer = checkpoints.Checkpointer(workdir, read_only=True)
  try:
    steps = checkpointer.steps
    if not steps:
      return [], None, {}
    params = checkpointer.manager.item_metadata(steps[-1])['params']
    count = int(sum(np.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(params)))
    return steps, count, checkpointer.progress(steps[-1])
  finally:
    checkpointer.close()


def summarize(workdir: str, split: str | None = None, shown_workdir: str | None = None) -> str:
  """The summary text of the run in `workdir` (paths printed under `shown_workdir`)."""
  shown = shown_workdir or workdir
  model, train_config = cli.build_run_model(workdir)
  config = model.config
  steps, parameters, progress = _checkpoint_facts(workdir)
  metrics = _read_jsonl(os.path.join(workdir, 'train_metrics.jsonl'))
  trained_steps = max([row['step'] for row in metrics] + steps + [0])
  wall = _read_jsonl(os.path.join(workdir, 'train_wall.jsonl'))
  seconds = sum(row.get('seconds', 0.0) for row in wall)
  kind = type(config.stack).__name__
  lines = [f'Summary of the run in {shown}']

  size = f'{config.num_layers} layers, d {config.model_dim}, window {config.window_length} tokens'
  if parameters:
    size += f', {parameters:,} parameters'
  tokens = trained_steps * train_config.batch_size * train_config.segment_length
  took = f' in {_clock(seconds)} (h:mm:ss)' if seconds else ''
  task = 'text files' if train_config.text_dir else train_config.task
  lines += [f'  trained     {MODEL_NAMES.get(kind, kind)}: {size}',
            f'              {trained_steps:,} steps x {train_config.batch_size} lanes x '
            f'{train_config.segment_length} tokens = {tokens:,} tokens of {task}/'
            f'{train_config.train_split}{took}']

  evaluation = latest_eval(workdir, split)
  if evaluation is None:
    lines.append('  result      not evaluated yet: python -m melodi_jax.evaluate '
                 f'--workdir={shown} --split={split or "validation"}')
  else:
    path, result = evaluation
    lines += [f'  result      {result["bits_per_byte"]:.3f} bits/byte on {result["task"]}/'
              f'{result["split"]} at step {result["step"]} (lower is better)',
              f'              {result["documents"]:,} documents, {result["bytes"]:,.0f} bytes, '
              'each read to its end, memory carried across segments']
    scale = []
    if result.get('predicted_bytes'):
      uniform = math.log2(model.vocab_size) * result['tokens'] / result['predicted_bytes']
      scale.append(f'{uniform:.3f} bits/byte: uniform guessing over {model.vocab_size} tokens')
    unigram = (None if result['task'].startswith('text_dir_') else
               unigram_bits_per_byte(result['task'], result['split']))
    if unigram is not None:
      scale.append(f'{unigram:.3f} bits/byte: a unigram model (token frequencies of the train '
                   'split), measured now on the same documents')
    for i, line in enumerate(scale):
      lines.append(f'  {"for scale" if i == 0 else "":10}  {line}')
    if result.get('memory_floats_per_lane'):
      lines.append(f'  memory      {result["memory_floats_per_lane"]:,} floats per lane carried '
                   'from window to window')

  collapsed = progress.get('collapse')
  if collapsed:
    before = collapsed.get('last_checkpoint_before')
    lines.append(f'  warning     training collapsed to uniform output at step {collapsed["step"]}'
                 + (f'; the last checkpoint before it is step {before}' if before is not None
                    else ''))

  checkpoint_steps = ', '.join(str(s) for s in steps) or 'none'
  lines += [f'  files       checkpoints  {os.path.join(shown, "checkpoints")} (steps '
            f'{checkpoint_steps})',
            f'              metrics      {os.path.join(shown, "train_metrics.jsonl")}; '
            f'TensorBoard: tensorboard --logdir {shown}']
  if evaluation is not None:
    shown_path = os.path.join(shown, 'eval', os.path.basename(path))
    lines.append(f'              evaluation   {shown_path}')
  lines += [
      f'  next        your own text   python -m melodi_jax.evaluate --workdir={shown} '
      '--text_dir=FOLDER_OF_TEXT_FILES',
      f'              generate        python -m melodi_jax.generate --workdir={shown} '
      '--prompt_file=PROMPT.txt --max_new_tokens=200',
      f'              train longer    python -m melodi_jax.train --workdir={shown} '
      f'--gin_file={os.path.join(shown, "config.gin")} '
      f'--gin_bindings="TrainConfig.num_steps = {max(2 * trained_steps, 1000)}"',
      '              compare models  bash launch/experiments/compare_small.sh   (MELODI and its '
      'baselines; hours on a CPU; launch/experiments/README.md)']
  return '\n'.join(lines)


def main(argv):
  if len(argv) > 1:
    raise cli.UserError(f'unexpected arguments {argv[1:]}; every option is a --flag')
  if not FLAGS.workdir:
    raise cli.UserError('--workdir is required: pass the folder of a training run')
  print(summarize(os.path.abspath(FLAGS.workdir), FLAGS.split, shown_workdir=FLAGS.workdir))


if __name__ == '__main__':
  cli.run(main)
