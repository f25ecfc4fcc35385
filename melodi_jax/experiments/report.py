"""Markdown tables and PNG plots of the compare_small and recall experiments, generated from run
folders only.

  python -m melodi_jax.experiments.report compare_small --runs=DIR --out=results --rows=a,b --command=...
  python -m melodi_jax.experiments.report recall --runs=DIR --out=results --rows=a,b --command=...

A run folder is what the trainer and melodi_jax.experiments.evaluate_run write: config.gin,
train_metrics.jsonl, TensorBoard events (the capped validation evals during training),
train_wall.jsonl (wall seconds per trainer invocation, written by the launch scripts),
model_stats.json, eval/<task>_<split>_<step>.json and eval/recall_<split>_<step>.json.
Nothing is typed in: a missing number is printed as "—" with the reason below the table.
The reports live in compare_small_report.py and recall_report.py, what they share in reporting.py
and run_folder.py; the names other reports import from here are re-exported below.
"""
from __future__ import annotations

import os

from absl import flags

from melodi_jax.experiments.compare_small_report import COMPARE_SPLITS, PAPER_ORDER, compare_small
from melodi_jax.experiments.compare_small_report import ordering_note
from melodi_jax.experiments.recall_report import chance_band, chance_from, recall
from melodi_jax.experiments.reporting import LABELS, git_commit, machine, style
from melodi_jax.experiments.run_folder import CURVE_TAG, RunSummary, summarize
from melodi_jax.train import cli

EXPERIMENTS = {'compare_small': compare_small, 'recall': recall}

__all__ = ['COMPARE_SPLITS', 'CURVE_TAG', 'EXPERIMENTS', 'LABELS', 'PAPER_ORDER', 'RunSummary',
           'chance_band', 'chance_from', 'compare_small', 'git_commit', 'machine',
           'ordering_note', 'recall', 'style', 'summarize']


def define_flags() -> None:
  """The command-line flags (defined only when run as a program: the library stays importable
  beside other entry points)."""
  flags.DEFINE_string('runs', None, 'Folder holding one run folder per row.')
  flags.DEFINE_string('out', None, 'Where the .md and .png files go.')
  flags.DEFINE_list('rows', None, 'Comma-separated run folder names, in table order.')
  flags.DEFINE_string('command', '(not given)', 'The command that made the runs.')


def main(argv):
  FLAGS = flags.FLAGS  # pylint: disable=invalid-name
  if len(argv) != 2 or argv[1] not in EXPERIMENTS:
    raise cli.UserError(f'give one experiment, {" or ".join(EXPERIMENTS)} (got {argv[1:]}), '
                        'e.g. `report compare_small --runs=DIR --out=DIR --rows=a,b`')
  for name in ('runs', 'out', 'rows'):
    if not FLAGS[name].value:
      raise cli.UserError(f'--{name} is required')
  if not os.path.isdir(FLAGS.runs):
    raise cli.UserError(f'--runs={FLAGS.runs} is not a folder')
  rows = [r for r in FLAGS.rows if r]
  path = EXPERIMENTS[argv[1]](FLAGS.runs, FLAGS.out, rows, FLAGS.command)
  print(f'wrote {path}')


if __name__ == '__main__':
  define_flags()
  cli.run(main)
