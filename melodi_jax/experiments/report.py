"""Markdown tables and PNG plots of issue 7's experiments, generated from run folders only.

  python -m melodi_jax.experiments.report compare_small --runs=DIR --out=results --rows=a,b --command=...
  python -m melodi_jax.experiments.report recall --runs=DIR --out=results --rows=a,b --command=...

A run folder is what the trainer and melodi_jax.experiments.evaluate_run write: config.gin,
train_metrics.jsonl, TensorBoard events (the capped validation evals during training),
train_wall.jsonl (wall seconds per trainer invocation, written by the launch scripts),
model_stats.json, eval/<task>_<split>_<step>.json and eval/recall_<split>_<step>.json.
Nothing is typed in: a missing number is printed as "—" with the reason below the table.
"""
from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
from typing import Any, Sequence

COMPARE_SPLITS = (('books_bytes', 'validation'), ('books_bytes', 'test'), ('math_bytes', 'test'),
                  ('code_bytes', 'test'))
CURVE_TAG = 'eval/books_bytes_validation/bits_per_byte'
LABELS = {
    'vanilla': 'vanilla (no memory)', 'transformer_xl': 'Transformer-XL',
    'block_recurrent': 'Block-Recurrent', 'memorizing_dense': 'Memorizing (dense)',
    'memorizing_topk': 'Memorizing (top-k)', 'memlong': 'MemLong-style', 'melodi': 'MELODI S+L',
    'melodi_short_only': 'MELODI short-term only', 'melodi_long_only': 'MELODI long-term only',
    'melodi_no_mix': 'MELODI no summary branching',
}
# The paper's perplexity ordering, best first: MELODI <= Memorizing <= Block-Recurrent <= TXL.
PAPER_ORDER = ('melodi', 'memorizing_dense', 'block_recurrent', 'transformer_xl')


def _style(name: str) -> dict:
  """The same color (and marker) for a model in every plot: its place in LABELS."""
  names = list(LABELS)
  index = names.index(name) if name in names else len(names)
  return {'color': f'C{index % 10}', 'marker': 'osD^v<>ph*'[index % 10]}


# ------------------------------------------------------------------------------------------
# Reading a run folder


def _read_json(path: str) -> Any:
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def _read_jsonl(path: str) -> list[dict]:
  if not os.path.isfile(path):
    return []
  with open(path, encoding='utf-8') as f:
    return [json.loads(line) for line in f if line.strip()]


def latest_evals(workdir: str, prefix: str = '') -> dict[tuple[str, str], dict]:
  """{(task, split): result} of the highest step per task/split in DIR/eval/."""
  found: dict[tuple[str, str], dict] = {}
  for path in glob.glob(os.path.join(workdir, 'eval', f'{prefix}*.json')):
    name = os.path.basename(path)[:-len('.json')]
    match = re.fullmatch(r'(.+)_(train|validation|test)_(\d+)', name)
    if not match:
      continue
    key, step = (match.group(1), match.group(2)), int(match.group(3))
    if key not in found or found[key]['step'] < step:
      result = _read_json(path)
      result.setdefault('step', step)
      found[key] = result
  return found


def tensorboard_scalars(workdir: str, tag: str) -> list[tuple[int, float]]:
  """(step, value) of one scalar tag in the run's TensorBoard events (last value per step)."""
  files = sorted(glob.glob(os.path.join(workdir, 'events.out.tfevents.*')))
  if not files:
    return []
  from tensorboard.backend.event_processing import event_file_loader  # pylint: disable=g-import-not-at-top
  from tensorboard.util import tensor_util  # pylint: disable=g-import-not-at-top
  values: dict[int, float] = {}
  for path in files:
    for event in event_file_loader.EventFileLoader(path).Load():
      for value in event.summary.value:
        if value.tag != tag:
          continue
        if value.HasField('tensor'):
          values[int(event.step)] = float(tensor_util.make_ndarray(value.tensor))
        else:
          values[int(event.step)] = float(value.simple_value)
  return sorted(values.items())


@dataclasses.dataclass
class RunSummary:
  name: str
  workdir: str
  step: int = 0                       # last trained step (train_metrics)
  parameters: int | None = None
  memory_floats: int | None = None
  memory_parts: dict | None = None
  train_seconds: float | None = None  # sum of the trainer invocations' wall time
  tokens_per_second: float | None = None  # median over the logged intervals
  evals: dict = dataclasses.field(default_factory=dict)
  curve: list = dataclasses.field(default_factory=list)
  train_curve: list = dataclasses.field(default_factory=list)


def summarize(name: str, workdir: str, curve_tag: str = CURVE_TAG) -> RunSummary:
  summary = RunSummary(name, workdir)
  metrics = _read_jsonl(os.path.join(workdir, 'train_metrics.jsonl'))
  if metrics:
    summary.step = max(int(row['step']) for row in metrics)
    rates = [row['tokens_per_second'] for row in metrics[1:] if 'tokens_per_second' in row]
    if rates:  # the first interval holds the compile
      summary.tokens_per_second = statistics.median(rates)
    by_step = {int(row['step']): row['bits_per_byte'] for row in metrics if 'bits_per_byte' in row}
    summary.train_curve = sorted(by_step.items())
  stats_path = os.path.join(workdir, 'model_stats.json')
  if os.path.isfile(stats_path):
    stats = _read_json(stats_path)
    summary.parameters = stats.get('parameters')
    memory = stats.get('memory_floats_per_lane') or {}
    summary.memory_floats, summary.memory_parts = memory.get('floats'), memory.get('parts')
  wall = _read_jsonl(os.path.join(workdir, 'train_wall.jsonl'))
  if wall:
    summary.train_seconds = sum(row['seconds'] for row in wall)
  summary.evals = latest_evals(workdir)
  summary.curve = tensorboard_scalars(workdir, curve_tag)
  return summary


# ------------------------------------------------------------------------------------------
# Formatting


def _fmt(value, spec: str = '.3f', missing: str = '—') -> str:
  if value is None or (isinstance(value, float) and not math.isfinite(value)):
    return missing
  return format(value, spec)


def _millions(count: int | None) -> str:
  if count is None:
    return '—'
  return f'{count / 1e6:.2f}M' if count >= 1e6 else f'{count / 1e3:.1f}k'


def _clock(seconds: float | None) -> str:
  if seconds is None:
    return '—'
  return f'{int(seconds) // 60}:{int(seconds) % 60:02d}'


def machine() -> str:
  """One line: CPU model, cores, memory, OS, Python and jax versions, load average now."""
  cpu = platform.processor() or platform.machine()
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      names = [line.split(':', 1)[1].strip() for line in f if line.startswith('model name')]
    cpu = names[0] if names else cpu
  except OSError:
    pass
  memory = ''
  try:
    with open('/proc/meminfo', encoding='utf-8') as f:
      kib = int(f.readline().split()[1])
    memory = f', {kib / 2**20:.0f} GiB RAM'
  except (OSError, ValueError, IndexError):
    pass
  try:
    import jax  # pylint: disable=g-import-not-at-top
    jax_version = f'jax {jax.__version__} ({jax.default_backend()})'
  except ImportError:
    jax_version = 'jax not importable'
  load = ' '.join(f'{x:.1f}' for x in os.getloadavg())
  return (f'{cpu}, {os.cpu_count()} cores{memory}; {platform.system()} {platform.release()}; '
          f'Python {platform.python_version()}, {jax_version}; load average at report time {load}')


def git_commit() -> str:
  try:
    return subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True,
                          check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return 'unknown'


def run_settings(workdir: str) -> dict[str, str]:
  """Selected bindings of the operative config.gin (for the Setup line)."""
  path = os.path.join(workdir, 'config.gin')
  settings = {}
  if os.path.isfile(path):
    with open(path, encoding='utf-8') as f:
      for line in f:
        match = re.match(r'^\s*([A-Za-z_]+\.[a-z_]+)\s*=\s*(.+?)\s*$', line)
        if match:
          settings[match.group(1)] = match.group(2)
  return settings


# ------------------------------------------------------------------------------------------
# compare_small


def _bpb(summary: RunSummary, task: str, split: str) -> float | None:
  result = summary.evals.get((task, split))
  return None if result is None else result.get('bits_per_byte')


def ordering_note(rows: Sequence[RunSummary], task: str = 'books_bytes',
                  split: str = 'test') -> str:
  """Whether the paper's order (MELODI <= Memorizing <= Block-Recurrent <= Transformer-XL in
  bits/byte) holds on `task`/`split`, and the memory ratio Memorizing (dense) / MELODI."""
  by_name = {r.name: r for r in rows}
  present = [n for n in PAPER_ORDER if n in by_name and _bpb(by_name[n], task, split) is not None]
  lines = []
  if len(present) < 2:
    lines.append(f'Paper ordering on {task}/{split}: not enough rows evaluated to check.')
  else:
    values = [(n, _bpb(by_name[n], task, split)) for n in present]
    chain = ', '.join(f'{LABELS.get(n, n)} {v:.3f}' for n, v in values)
    broken = [(a, b) for (a, va), (b, vb) in zip(values, values[1:]) if round(va, 3) > round(vb, 3)]
    if broken:
      where = '; '.join(f'{LABELS.get(a, a)} > {LABELS.get(b, b)}' for a, b in broken)
      lines.append(f'Paper ordering on {task}/{split} (bits/byte, lower is better): **does not '
                   f'hold** ({where}). Ours, in the paper\'s order: {chain}.')
    else:
      lines.append(f'Paper ordering on {task}/{split} (bits/byte, lower is better): **holds**: '
                   f'{chain}.')
  melodi, memorizing = by_name.get('melodi'), by_name.get('memorizing_dense')
  if melodi and memorizing and melodi.memory_floats and memorizing.memory_floats:
    lines.append(f'Memory per lane: Memorizing (dense) {memorizing.memory_floats:,} floats / '
                 f'MELODI {melodi.memory_floats:,} floats = '
                 f'**{memorizing.memory_floats / melodi.memory_floats:.1f}x** (paper: ~8x).')
  return '\n\n'.join(lines)


def plot_curves(rows: Sequence[RunSummary], path: str, title: str) -> bool:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(8, 5))
  drawn = False
  for row in rows:
    if row.curve:
      steps, values = zip(*row.curve)
      ax.plot(steps, values, markersize=4, label=LABELS.get(row.name, row.name),
              **_style(row.name))
      drawn = True
  ax.set_xlabel('training step')
  ax.set_ylabel('bits/byte (books validation, first batches)')
  ax.set_title(title)
  if drawn:
    ax.legend(fontsize=8)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return drawn


def plot_tradeoff(rows: Sequence[RunSummary], path: str, task: str, split: str) -> bool:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(8, 5))
  drawn = False
  for row in rows:
    value = _bpb(row, task, split)
    if value is None:
      continue
    label = f'{LABELS.get(row.name, row.name)} ({value:.3f})'
    if not row.memory_floats:  # no memory: a reference line, it has no place on a log axis
      ax.axhline(value, linestyle='--', linewidth=1, label=label, color=_style(row.name)['color'])
      continue
    ax.scatter(row.memory_floats, value, s=40, label=label, **_style(row.name))
    drawn = True
  ax.set_xscale('log')
  ax.set_xlabel('memory kept between windows (floats per lane, log scale)')
  ax.set_ylabel(f'bits/byte ({task.split("_")[0]} {split})')
  ax.set_title('Quality vs memory footprint (lower left is better)')
  ax.grid(alpha=0.3)
  if drawn:
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return drawn


def memory_usage_table(rows: Sequence[RunSummary]) -> list[str]:
  """Lines of a table from DIR/memory_usage.json (written by the launch script), if any."""
  usages = []
  for row in rows:
    path = os.path.join(row.workdir, 'memory_usage.json')
    if os.path.isfile(path):
      usages.append((row, _read_json(path)))
  if not usages:
    return []
  lines = ['| model | gated memory weight 1 - g | self-attention mass on memory, by layer '
           '(under uniform attention) |', '|---|---|---|']
  for row, usage in usages:
    gates = '; '.join(f'{name.split("/")[-1]} {g["memory_weight"]:.3f}'
                      for name, g in usage.get('gates', {}).items()) or '—'
    uniform = usage.get('uniform_mass_on_memory', {})
    masses = '; '.join(f'{name.split("/")[-2] if name.count("/") else name} {m:.3f}'
                       + (f' ({uniform[name]:.3f})' if name in uniform else '')
                       for name, m in usage.get('attention_mass_on_memory', {}).items()) or '—'
    lines.append(f'| {LABELS.get(row.name, row.name)} | {gates} | {masses} |')
  return lines


def compare_small(runs: str, out: str, rows: Sequence[str], command: str) -> str:
  """Writes OUT/compare_small.md and its two PNGs from the run folders under RUNS."""
  summaries = [summarize(name, os.path.join(runs, name)) for name in rows
               if os.path.isdir(os.path.join(runs, name))]
  missing = [name for name in rows if not os.path.isdir(os.path.join(runs, name))]
  os.makedirs(out, exist_ok=True)
  curves_png, tradeoff_png = 'compare_small_validation.png', 'compare_small_tradeoff.png'
  plot_curves(summaries, os.path.join(out, curves_png),
              'Validation bits/byte during training (books, bytes)')
  plot_tradeoff(summaries, os.path.join(out, tradeoff_png), 'books_bytes', 'test')

  header = ['model', 'parameters', 'memory floats / lane', 'steps', 'train time (m:s)',
            'tokens/s'] + [f'{t.split("_")[0]} {s}' for t, s in COMPARE_SPLITS]
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  capped = []
  for row in summaries:
    cells = [LABELS.get(row.name, row.name), _millions(row.parameters),
             f'{row.memory_floats:,}' if row.memory_floats is not None else '—', str(row.step),
             _clock(row.train_seconds), _fmt(row.tokens_per_second, ',.0f')]
    for task, split in COMPARE_SPLITS:
      result = row.evals.get((task, split))
      if result is None:
        cells.append('—')
        continue
      mark = '' if result.get('complete', True) else '*'
      if mark:
        capped.append(f'{result.get("batches")} batches ({result.get("tokens", 0):,.0f} '
                      'predicted tokens)')
      cells.append(_fmt(result.get('bits_per_byte')) + mark)
    lines.append('| ' + ' | '.join(cells) + ' |')

  settings = run_settings(summaries[0].workdir) if summaries else {}
  keys = ('ModelConfig.num_layers', 'ModelConfig.model_dim', 'ModelConfig.num_heads',
          'ModelConfig.head_dim', 'ModelConfig.mlp_dim', 'ModelConfig.window_length',
          'TrainConfig.segment_length', 'TrainConfig.batch_size', 'TrainConfig.num_steps',
          'TrainConfig.seed', 'OptimizerConfig.name', 'OptimizerConfig.peak_learning_rate')
  setup = ', '.join(f'{k.split(".")[1].replace("name", "optimizer")} {settings[k]}'
                    for k in keys if k in settings)
  parts = []
  for row in summaries:
    if row.memory_parts:
      parts.append(f'{row.name}: ' + ' + '.join(f'{k} {v:,}' for k, v in row.memory_parts.items()))
  text = [
      '# Small comparison on books (bytes)',
      '',
      f'Generated by `python -m melodi_jax.experiments.report compare_small` at commit '
      f'{git_commit()}; do not edit by hand.',
      '',
      f'Command: `{command}`',
      '',
      f'Machine: {machine()}',
      '',
      f'Setup (every row; configs/experiments/compare_small.gin): {setup or "—"}.',
      'Bits/byte of the final checkpoint under the evaluation protocol (lanes unshuffled, every '
      'document read to its end, memory carried across segments, reset at document starts). '
      'Memory floats per lane: float elements of the carried memory pytree per sequence (masks '
      'and counters left out), as the MELODI paper counts. Train time: wall time of the trainer '
      '(compile, evals during training and checkpoints included); tokens/s: median over the '
      'logged intervals.',
      '',
      *lines,
      '',
  ]
  if capped:
    caps = ', '.join(sorted(set(capped)))
    text += [f'\\* capped evaluation: only the first {caps} of the split were read '
             '(CROSS_DOMAIN_MAX_BATCHES for math/code; EVAL_MAX_BATCHES or SMOKE=1 for every '
             'split), not the whole split. Lanes read the longest documents first, so a capped '
             'eval covers the openings of the longest documents.', '']
  if missing:
    text += [f'Not run yet: {", ".join(missing)}.', '']
  usage = memory_usage_table(summaries)
  text += [ordering_note(summaries), '']
  if usage:
    text += ['Memory use of the final checkpoints (`python -m melodi_jax.experiments.memory_usage`, '
             'first batches of books validation): weight on the gated memory, 1 - g, of each gated '
             'layer (mean over heads/channels), and the share of each layer\'s self-attention '
             'mass on memory keys (short-term memory, XL cache, retrieved chunks).', '', *usage, '']
  text += [
           f'![validation bits/byte vs step]({curves_png})', '',
           f'![bits/byte vs memory footprint]({tradeoff_png})', '',
           'Memory per lane by part: ' + ('; '.join(parts) if parts else '—') + '.', '']
  path = os.path.join(out, 'compare_small.md')
  with open(path, 'w', encoding='utf-8') as f:
    f.write('\n'.join(text))
  return path


# ------------------------------------------------------------------------------------------
# recall


def chance_band(examples: int) -> float:
  """The digit accuracy below which a row is at chance: 0.1 + 3 standard errors of 5 * examples
  guesses at 1 in 10."""
  return 0.1 + 3 * (0.1 * 0.9 / (5 * max(examples, 1))) ** 0.5


def chance_from(by_distance: dict) -> int | None:
  """The smallest k from which on (that k and every larger one) digit accuracy is within the
  chance band; None when the largest k is still above it."""
  fall = None
  for k in sorted(by_distance, key=int, reverse=True):
    score = by_distance[k]
    if score['digit_accuracy'] >= chance_band(score['examples']):
      break
    fall = int(k)
  return fall


def recall(runs: str, out: str, rows: Sequence[str], command: str, split: str = 'test') -> str:
  """Writes OUT/recall.md and recall.png: key-digit accuracy per distance k for each run."""
  summaries, results = [], {}
  for name in rows:
    workdir = os.path.join(runs, name)
    if not os.path.isdir(workdir):
      continue
    paths = sorted(glob.glob(os.path.join(workdir, 'eval', f'recall_{split}_*.json')),
                   key=lambda p: int(re.search(r'_(\d+)\.json$', p).group(1)))
    if paths:
      summaries.append(summarize(name, workdir))
      results[name] = _read_json(paths[-1])
  os.makedirs(out, exist_ok=True)
  distances = sorted({int(k) for r in results.values() for k in r['by_distance']})
  header = (['model', 'memory floats / lane', 'steps'] + [f'k = {k}' for k in distances] +
            ['at chance from'])
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for row in summaries:
    by_distance = results[row.name]['by_distance']
    cells = [LABELS.get(row.name, row.name),
             f'{row.memory_floats:,}' if row.memory_floats is not None else '—', str(row.step)]
    for k in distances:
      score = by_distance.get(str(k))
      cells.append('—' if score is None else f'{score["digit_accuracy"]:.2f} '
                   f'({score["key_accuracy"]:.2f})')
    fall = chance_from(by_distance)
    cells.append('never (up to the largest k)' if fall is None else f'k = {fall}')
    lines.append('| ' + ' | '.join(cells) + ' |')

  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for row in summaries:
    by_distance = results[row.name]['by_distance']
    ks = [k for k in distances if str(k) in by_distance]
    ax.plot(ks, [by_distance[str(k)]['digit_accuracy'] for k in ks],
            label=LABELS.get(row.name, row.name), **_style(row.name))
  ax.axhline(0.1, color='gray', linestyle=':', label='chance (1 in 10 digits)')
  ax.set_xscale('log', base=2)
  ax.set_xlabel('distance k between key and question (windows)')
  ax.set_ylabel('key digit accuracy (teacher-forced)')
  ax.set_ylim(0, 1.02)
  ax.legend(fontsize=8)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(os.path.join(out, 'recall.png'), dpi=110)
  plt.close(fig)

  first = next(iter(results.values()), {})
  reach = []
  for row in summaries:
    note = results[row.name].get('reach_note')
    if note:
      reach.append(f'- {LABELS.get(row.name, row.name)}: {note}')
  text = [
      '# Long-range recall of a 5-digit key',
      '',
      f'Generated by `python -m melodi_jax.experiments.report recall` at commit {git_commit()}; '
      'do not edit by hand.',
      '',
      f'Command: `{command}`',
      '',
      f'Machine: {machine()}',
      '',
      'Task (melodi_jax/data/recall.py): real book text (digits removed) in '
      'which a random 5-digit key is stated near the start ("the key is 48213.") and asked for '
      'again exactly k windows later ("the key is _____"), filler in between. Training (every '
      'row from scratch, configs/experiments/recall.gin: same task, batch shape, steps, '
      'optimizer and seed): key documents with k ~ 1/k in 1..32 and the question repeated every '
      'k windows, and echo documents (runs of a book snippet repeated) that reward copying; '
      'loss (`recallkeys_bytes`) only on what must be recalled: the key digits of every question '
      'and the echoes\' repeats (the book filler is context, not a target). Cells: '
      'accuracy of the 5 key digits predicted (argmax) with the question and the earlier digits '
      'given (teacher-forced); in parentheses the fraction of keys with all 5 digits right. '
      f'{first.get("examples_per_distance", "?")} test documents per k; scorer: '
      '`melodi_jax.experiments.recall_score.score`. "At chance from": the smallest k from '
      'which on every digit accuracy is below 0.1 + 3 standard errors '
      f'({chance_band(first.get("examples_per_distance", 1) or 1):.2f} at this count).',
      '',
      *lines,
      '',
      'How far each model can see (a model cannot recall beyond it):',
      *reach,
      '',
      '![recall accuracy vs distance](recall.png)',
      '',
  ]
  path = os.path.join(out, 'recall.md')
  with open(path, 'w', encoding='utf-8') as f:
    f.write('\n'.join(text))
  return path


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('experiment', choices=('compare_small', 'recall'))
  parser.add_argument('--runs', required=True, help='folder holding one run folder per row')
  parser.add_argument('--out', required=True, help='where the .md and .png files go')
  parser.add_argument('--rows', required=True, help='comma-separated run folder names, in order')
  parser.add_argument('--command', default='(not given)', help='the command that made the runs')
  args = parser.parse_args(argv)
  rows = [r for r in args.rows.split(',') if r]
  if not os.path.isdir(args.runs):
    print(f'error: --runs={args.runs} is not a folder', file=sys.stderr)
    sys.exit(2)
  if args.experiment == 'compare_small':
    path = compare_small(args.runs, args.out, rows, args.command)
  else:
    path = recall(args.runs, args.out, rows, args.command)
  print(f'wrote {path}')


if __name__ == '__main__':
  main()
