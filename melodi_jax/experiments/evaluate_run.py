"""`python -m melodi_jax.experiments.evaluate_run --workdir=DIR --evals=books_bytes:validation,...`

The evaluation protocol of `python -m melodi_jax.evaluate` (train/evaluator.py: lanes unshuffled,
every document read to its end, memory carried, reset at document starts) for several task/split
pairs with one restore and one compiled eval step; writes the same DIR/eval/<task>_<split>_<step>
.json files, plus DIR/model_stats.json (parameters, memory floats per lane). --without_cross
evaluates with every gated memory read switched off (files end in _without_cross): does the
trained model use its memory, and does the read help? An eval whose file
already exists complete (or capped the same way) is skipped, so reruns only do what is missing.

--max_batches caps every eval (the JSON then says complete: false and how many batches were read);
an item `task:split:N` caps that one eval at N batches instead. The experiment scripts cap the
math and code test splits (CROSS_DOMAIN_MAX_BATCHES) and, in smoke mode or when EVAL_MAX_BATCHES is
set, every eval.
"""
from __future__ import annotations

import json
import os

from absl import flags, logging

from melodi_jax.train import cli

flags.DEFINE_string('workdir', None, 'A training run folder.')
flags.DEFINE_list('evals', ['books_bytes:validation'],
                  'task:split pairs to evaluate; task:split:N caps that eval at N batches.')
flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')
flags.DEFINE_integer('max_batches', None, 'Cap on batches per eval (default: whole splits).')
flags.DEFINE_integer('batch_size', None, 'Eval lanes (default: the run\'s eval batch size).')
flags.DEFINE_bool('without_cross', False, 'Ablation: every gated memory read (MELODI long-term, '
                  'Memorizing kNN, Block-Recurrent states) switched off by setting its gate '
                  'logits to +30; the result files end in _without_cross.')
FLAGS = flags.FLAGS


def _done(path: str, max_batches: int | None) -> bool:
  if not os.path.isfile(path):
    return False
  with open(path, encoding='utf-8') as f:
    result = json.load(f)
  return bool(result.get('complete')) or (max_batches is not None and
                                          result.get('batches') == max_batches)


def _parse_eval(item: str, max_batches: int | None) -> tuple[str, str, int | None]:
  """'task:split' or 'task:split:N' -> (task, split, cap); the smaller cap wins."""
  parts = item.split(':')
  cap = max_batches
  if len(parts) == 3 and parts[2].isdigit() and int(parts[2]) > 0:
    cap = int(parts[2]) if cap is None else min(cap, int(parts[2]))
  elif len(parts) != 2:
    parts = []
  if len(parts) < 2 or not parts[0] or not parts[1]:
    raise cli.UserError(f'--evals item {item!r} is not task:split or task:split:N '
                        '(e.g. books_bytes:test or math_bytes:test:96)')
  return parts[0], parts[1], cap


def write_model_stats(workdir: str, model, params) -> dict:
  from melodi_jax.experiments import runs  # pylint: disable=g-import-not-at-top
  stats = {'parameters': runs.count_params(params),
           'memory_floats_per_lane': runs.memory_floats_per_lane(model)}
  path = os.path.join(workdir, 'model_stats.json')
  with open(path + '.tmp', 'w', encoding='utf-8') as f:
    json.dump(stats, f, indent=1)
  os.replace(path + '.tmp', path)
  return stats


def main(argv):
  if len(argv) > 1:
    raise cli.UserError(f'unexpected arguments {argv[1:]}; every option is a --flag')
  if not FLAGS.workdir:
    raise cli.UserError('--workdir is required: pass the folder of a training run')
  pairs = [_parse_eval(item, FLAGS.max_batches) for item in FLAGS.evals]
  from melodi_jax.experiments import runs  # pylint: disable=g-import-not-at-top
  from melodi_jax.train import evaluator, inputs  # pylint: disable=g-import-not-at-top

  run = runs.restore(FLAGS.workdir, FLAGS.step, FLAGS.batch_size)
  write_model_stats(run.workdir, run.model, run.params)
  params, suffix = run.params, ''
  if FLAGS.without_cross:
    params, suffix = runs.without_cross(run.params), '_without_cross'
  batch = FLAGS.batch_size or run.train_config.eval_batch
  runner = None
  for task, split, cap in pairs:
    path = os.path.join(run.workdir, 'eval', f'{task}_{split}_{run.step}{suffix}.json')
    if _done(path, cap):
      logging.info('%s exists: skipped', path)
      continue
    spec = inputs.StreamSpec(task=task, split=split, batch_size=batch,
                             segment_length=run.train_config.segment_length,
                             window_length=run.model.window_length, train=False)
    if runner is None:  # one compiled eval step serves every task: the shapes are the same
      runner = evaluator.Evaluator(run.model, run.mesh, run.params_sharding, spec,
                                   position_buckets=run.train_config.eval_position_buckets)
    runner.spec, runner.max_batches = spec, cap
    result = runner.run(params, run.step, stream=inputs.open_stream(spec, None,
                                                                    run.model.vocab_size))
    evaluator.write_result(run.workdir, result, suffix)
    print(f'{task}/{split} step {result.step}: {result.bits_per_byte:.4f} bits/byte over '
          f'{result.tokens:.0f} tokens ({result.documents} documents, complete={result.complete})'
          f' -> {path}', flush=True)


if __name__ == '__main__':
  cli.run(main)
