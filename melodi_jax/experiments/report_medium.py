"""results/compare_medium.md and its plots, rebuilt from the saved outputs of finished
rows, so the experiment can run in several sittings and the report needs no run folder.

  python -m melodi_jax.experiments.report_medium save --workdir=RUN --to=SAVED/<row>
  python -m melodi_jax.experiments.report_medium report --saved=SAVED --out=results --rows=a,b --command=...

`save` copies a finished run's small files (config.gin, train_metrics.jsonl, train_wall.jsonl,
model_stats.json, memory_usage.json, the final step's eval/*.json) and writes
validation_curve.json (the capped validation evals during training, read from TensorBoard).
`report` writes OUT/compare_medium.md, compare_medium_positions.png (per-position bits/byte, one
line per model), compare_medium_learning.png and compare_medium_tradeoff.png.
"""
from __future__ import annotations

import json
import math
import os
import shutil
from typing import Sequence

from absl import flags

from melodi_jax.experiments import compare_small_report, reporting, run_folder
from melodi_jax.train import cli

SMALL_FILES = ('config.gin', 'train_metrics.jsonl', 'train_wall.jsonl', 'model_stats.json',
               'memory_usage.json')
CURVE_FILE = 'validation_curve.json'
REFERENCE = 'vanilla'        # the windowed model without memory: what a memory is measured against
POSITION_SPLITS = (('books_bytes', 'test'), ('books_bytes', 'validation'))
# The bindings the Setup line shows.
SETUP_KEYS = ('ModelConfig.num_layers', 'ModelConfig.model_dim', 'ModelConfig.num_heads',
              'ModelConfig.head_dim', 'ModelConfig.mlp_dim', 'ModelConfig.window_length',
              'ModelConfig.position_bias_scale', 'TrainConfig.segment_length',
              'TrainConfig.batch_size', 'TrainConfig.num_steps', 'TrainConfig.seed',
              'OptimizerConfig.name', 'OptimizerConfig.peak_learning_rate',
              'OptimizerConfig.final_learning_rate', 'OptimizerConfig.warmup_steps')


_style = reporting.style  # one color per model in every report


def save_row(workdir: str, to: str) -> list[str]:
  """Copies the small outputs of run folder `workdir` into `to`; returns what was written."""
  os.makedirs(os.path.join(to, 'eval'), exist_ok=True)
  written = []
  for name in SMALL_FILES:
    if os.path.isfile(os.path.join(workdir, name)):
      shutil.copy(os.path.join(workdir, name), os.path.join(to, name))
      written.append(name)
  for (task, split), result in run_folder.latest_evals(workdir).items():
    name = os.path.join('eval', f'{task}_{split}_{result["step"]}.json')
    shutil.copy(os.path.join(workdir, name), os.path.join(to, name))
    written.append(name)
  curve = run_folder.tensorboard_scalars(workdir, run_folder.CURVE_TAG)
  with open(os.path.join(to, CURVE_FILE), 'w', encoding='utf-8') as f:
    json.dump({'tag': run_folder.CURVE_TAG, 'points': curve}, f)
  written.append(CURVE_FILE)
  return written


def load(name: str, folder: str) -> run_folder.RunSummary:
  """A row from its saved folder (or a run folder: the curve then comes from TensorBoard)."""
  summary = run_folder.summarize(name, folder)
  curve_path = os.path.join(folder, CURVE_FILE)
  if not summary.curve and os.path.isfile(curve_path):
    with open(curve_path, encoding='utf-8') as f:
      summary.curve = [(int(s), float(v)) for s, v in json.load(f)['points']]
  return summary


def _fmt(value, spec: str = '.3f') -> str:
  if value is None or (isinstance(value, float) and not math.isfinite(value)):
    return '—'
  return format(value, spec)


def _hours(seconds: float | None) -> str:
  if seconds is None:
    return '—'
  seconds = int(seconds)
  return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'


def _label(name: str) -> str:
  return reporting.LABELS.get(name, name)


def positions_of(row: run_folder.RunSummary, task: str, split: str) -> list[dict] | None:
  result = row.evals.get((task, split))
  return (result or {}).get('by_position') or None


def _bpb_of(bucket: dict) -> float:
  """A bucket's bits/byte; NaN when it is empty (null in the JSON)."""
  value = bucket.get('bits_per_byte')
  return float('nan') if value is None else float(value)


# ------------------------------------------------------------------------------------------
# Tables and notes


def main_table(rows: Sequence[run_folder.RunSummary]) -> tuple[list[str], list[str]]:
  """(table lines, notes on capped cells)."""
  header = ['model', 'parameters', 'memory floats / lane', 'steps', 'train time (h:mm:ss)',
            'tokens/s'] + [f'{t.split("_")[0]} {s}' for t, s in compare_small_report.COMPARE_SPLITS]
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  capped = set()
  for row in rows:
    cells = [_label(row.name),
             '—' if row.parameters is None else f'{row.parameters / 1e6:.2f}M',
             '—' if row.memory_floats is None else f'{row.memory_floats:,}', str(row.step),
             _hours(row.train_seconds), _fmt(row.tokens_per_second, ',.0f')]
    for task, split in compare_small_report.COMPARE_SPLITS:
      result = row.evals.get((task, split))
      if result is None:
        cells.append('—')
        continue
      mark = '' if result.get('complete', True) else '*'
      if mark:
        capped.add(f'{task.split("_")[0]} {split}: {result.get("batches")} batches '
                   f'({result.get("tokens", 0):,.0f} predicted tokens)')
      cells.append(_fmt(result.get('bits_per_byte')) + mark)
    lines.append('| ' + ' | '.join(cells) + ' |')
  return lines, sorted(capped)


def position_table(rows: Sequence[run_folder.RunSummary], task: str, split: str) -> list[str]:
  """Bits/byte per document-position bucket, each with its difference to the reference row."""
  with_buckets = [(row, positions_of(row, task, split)) for row in rows]
  with_buckets = [(row, b) for row, b in with_buckets if b]
  if not with_buckets:
    return []
  labels = [b['label'] for b in with_buckets[0][1]]
  reference = next((b for row, b in with_buckets if row.name == REFERENCE), None)
  lines = ['| model | ' + ' | '.join(labels) + ' | all |', '|' + '---|' * (len(labels) + 2)]
  counts = [b['tokens'] for b in with_buckets[0][1]]
  lines.append('| predicted bytes | ' + ' | '.join(f'{c:,.0f}' for c in counts) + ' | '
               f'{sum(counts):,.0f} |')
  for row, buckets in with_buckets:
    if [b['label'] for b in buckets] != labels:
      continue  # evaluated with other bucket edges: not comparable in one table
    cells = []
    for k, bucket in enumerate(buckets):
      cell = _fmt(_bpb_of(bucket))
      if reference is not None and row.name != REFERENCE:
        delta = _bpb_of(bucket) - _bpb_of(reference[k])
        cell += '' if not math.isfinite(delta) else f' ({delta:+.3f})'
      cells.append(cell)
    total = row.evals[(task, split)].get('bits_per_byte')
    lines.append(f'| {_label(row.name)} | ' + ' | '.join(cells) + f' | {_fmt(total)} |')
  return lines


def sanity_note(rows: Sequence[run_folder.RunSummary], task: str = 'books_bytes',
                split: str = 'test') -> str:
  """The sanity ordering: Transformer-XL below the windowed model without memory."""
  by_name = {r.name: r for r in rows}
  values = {n: (by_name[n].evals.get((task, split)) or {}).get('bits_per_byte')
            for n in ('transformer_xl', REFERENCE) if n in by_name}
  if len(values) < 2 or None in values.values():
    return f'Sanity ordering on {task}/{split} (Transformer-XL < no memory): not evaluated yet.'
  txl, windowed = values['transformer_xl'], values[REFERENCE]
  verdict = ('**holds**' if txl < windowed else '**does not hold**: a defect to root-cause '
             '(a bug, or a training-dynamics cause to fix in the defaults), not a result')
  return (f'Sanity ordering on {task}/{split} (Transformer-XL < no memory): {verdict} '
          f'(Transformer-XL {txl:.3f}, no memory {windowed:.3f} bits/byte).')


# ------------------------------------------------------------------------------------------
# Plots


def plot_positions(rows: Sequence[run_folder.RunSummary], path: str, task: str, split: str) -> bool:
  """Left: bits/byte per position bucket; right: minus the reference row's (what memory buys)."""
  fig, (ax, ax_delta) = reporting.pyplot().subplots(1, 2, figsize=(12, 4.8))
  reference = next((positions_of(r, task, split) for r in rows if r.name == REFERENCE), None)
  drawn, labels = False, []
  for row in rows:
    buckets = positions_of(row, task, split)
    if not buckets:
      continue
    labels = labels or [b['label'] for b in buckets]
    if [b['label'] for b in buckets] != labels:
      continue
    x = range(len(buckets))
    ax.plot(x, [_bpb_of(b) for b in buckets], label=_label(row.name), **_style(row.name))
    if reference is not None:
      ax_delta.plot(x, [_bpb_of(b) - _bpb_of(r) for b, r in zip(buckets, reference)],
                    label=_label(row.name), **_style(row.name))
    drawn = True
  for axis in (ax, ax_delta):
    axis.set_xticks(range(len(labels)), labels, fontsize=8)
    axis.set_xlabel('position of the predicted byte in its document')
    axis.grid(alpha=0.3)
  ax.set_ylabel(f'bits/byte ({task.split("_")[0]} {split})')
  ax.set_title('Loss by document position')
  ax_delta.axhline(0.0, color='gray', linewidth=1)
  ax_delta.set_ylabel(f'bits/byte minus {_label(REFERENCE)}')
  ax_delta.set_title('What the memory buys (below 0: better than no memory)')
  reporting.save_figure(fig, path, [ax] if drawn else [])
  return drawn


def _moving_average(values: list[float], width: int) -> list[float]:
  out = []
  for i in range(len(values)):
    window = values[max(0, i - width + 1):i + 1]
    out.append(sum(window) / len(window))
  return out


def plot_learning(rows: Sequence[run_folder.RunSummary], path: str, smooth: int = 5) -> bool:
  """Left: training bits/byte (moving average over `smooth` logged steps); right: the capped
  validation evals during training."""
  fig, (ax_train, ax_valid) = reporting.pyplot().subplots(1, 2, figsize=(12, 4.8))
  drawn = False
  for row in rows:
    style = dict(_style(row.name), markersize=3, label=_label(row.name))
    if row.train_curve:
      steps, values = zip(*row.train_curve)
      ax_train.plot(steps, _moving_average(list(values), smooth), color=style['color'],
                    label=style['label'])
      drawn = True
    if row.curve:
      steps, values = zip(*row.curve)
      ax_valid.plot(steps, values, **style)
      drawn = True
  ax_train.set_title(f'Training bits/byte (moving average of {smooth} logged steps)')
  ax_valid.set_title('Validation bits/byte during training (first 8 batches)')
  for axis in (ax_train, ax_valid):
    axis.set_xlabel('training step')
    axis.set_ylabel('bits/byte')
    axis.grid(alpha=0.3)
  reporting.save_figure(fig, path, [ax_train, ax_valid] if drawn else [])
  return drawn


# ------------------------------------------------------------------------------------------
# The report


def write_report(saved: str, out: str, rows: Sequence[str], command: str) -> str:
  summaries, missing = run_folder.load_rows(saved, rows, load)
  os.makedirs(out, exist_ok=True)
  positions_png = 'compare_medium_positions.png'
  learning_png, tradeoff_png = 'compare_medium_learning.png', 'compare_medium_tradeoff.png'
  plot_positions(summaries, os.path.join(out, positions_png), *POSITION_SPLITS[0])
  plot_learning(summaries, os.path.join(out, learning_png))
  compare_small_report.plot_tradeoff(summaries, os.path.join(out, tradeoff_png), 'books_bytes',
                                     'test')

  table, capped = main_table(summaries)
  setup = run_folder.setup_line(summaries, SETUP_KEYS)
  text = [
      '# Medium comparison on books (bytes)', '',
      f'Generated by `python -m melodi_jax.experiments.report_medium report` at commit '
      f'{reporting.git_commit()} from the saved outputs of finished rows ({saved}); do not edit '
      'by hand.', '',
      f'Command (its last invocation): `{command}`', '',
      f'Machine (report time): {reporting.machine()}', '',
      f'Setup (every row; configs/experiments/compare_medium.gin): {setup or "—"}.', '',
      'Bits/byte of the final checkpoint under the evaluation protocol (lanes unshuffled, every '
      'document read to its end, memory carried across segments, reset at document starts). '
      'Memory floats per lane: float elements of the carried memory per sequence, as the MELODI '
      'paper counts. Train time: wall time of the trainer invocations (compile, evals during '
      'training and checkpoints included); tokens/s: median over the logged intervals.', '',
      *table, '']
  if capped:
    text += ['\\* capped evaluation (the first batches only; lanes read the longest documents '
             'first): ' + '; '.join(capped) + '.', '']
  if missing:
    text += [f'Not run yet: {", ".join(missing)}.', '']
  text += [sanity_note(summaries), '', compare_small_report.ordering_note(summaries), '']
  for task, split in POSITION_SPLITS:
    lines = position_table(summaries, task, split)
    if lines:
      text += [f'## Bits/byte by position in the document: {task.split("_")[0]} {split}', '',
               'Buckets of the predicted byte\'s index in its document (eval JSON `by_position`); '
               f'in parentheses the difference to {_label(REFERENCE)} (negative: the memory '
               'helps there). "predicted bytes": how many bytes each bucket holds.', '',
               *lines, '']
  text += [f'![bits/byte by document position]({positions_png})', '']
  usage = compare_small_report.memory_usage_table(summaries)
  if usage:
    text += ['## Memory use', '',
             'Final checkpoints, first batches of books validation '
             '(`python -m melodi_jax.experiments.memory_usage`): weight on the gated memory, '
             '1 - g, of each gated layer (mean over heads/channels), and the share of each '
             'layer\'s self-attention mass on memory keys (short-term memory, XL cache), beside '
             'the share under uniform attention.', '', *usage, '']
  parts = [f'{_label(r.name)}: ' + ' + '.join(f'{k} {v:,}' for k, v in r.memory_parts.items())
           for r in summaries if r.memory_parts]
  text += ['Memory per lane by part: ' + ('; '.join(parts) if parts else '—') + '.', '',
           '## Learning curves', '', f'![learning curves]({learning_png})', '',
           f'![bits/byte vs memory footprint]({tradeoff_png})', '']
  path = os.path.join(out, 'compare_medium.md')
  with open(path, 'w', encoding='utf-8') as f:
    f.write('\n'.join(text))
  return path


def define_flags() -> None:
  """The command-line flags (defined only when run as a program: the library stays importable
  beside other entry points)."""
  flags.DEFINE_string('workdir', None, 'save: the run folder.')
  flags.DEFINE_string('to', None, "save: the row's saved folder.")
  flags.DEFINE_string('saved', None, 'report: folder with one saved folder per row.')
  flags.DEFINE_string('out', None, 'report: where the .md and .png files go.')
  flags.DEFINE_list('rows', None, 'report: comma-separated row names, in order.')
  flags.DEFINE_string('command', '(not given)', 'report: the command that made the runs.')


def _required(*names: str) -> None:
  for name in names:
    if not flags.FLAGS[name].value:
      raise cli.UserError(f'--{name} is required')


def main(argv):
  FLAGS = flags.FLAGS  # pylint: disable=invalid-name
  if len(argv) != 2 or argv[1] not in ('save', 'report'):
    raise cli.UserError(f'give one command, save or report (got {argv[1:]}), e.g. '
                        '`report_medium save --workdir=RUN --to=SAVED/<row>`')
  if argv[1] == 'save':
    _required('workdir', 'to')
    if not os.path.isfile(os.path.join(FLAGS.workdir, 'train_metrics.jsonl')):
      raise cli.UserError(f'--workdir={FLAGS.workdir} is not a trained run folder')
    print(f'saved {", ".join(save_row(FLAGS.workdir, FLAGS.to))} -> {FLAGS.to}')
    return
  _required('saved', 'out', 'rows')
  if not os.path.isdir(FLAGS.saved):
    raise cli.UserError(f'--saved={FLAGS.saved} is not a folder; run the experiment (or save a '
                        'row) first')
  path = write_report(FLAGS.saved, FLAGS.out, [r for r in FLAGS.rows if r], FLAGS.command)
  print(f'wrote {path}')


if __name__ == '__main__':
  define_flags()
  cli.run(main)
