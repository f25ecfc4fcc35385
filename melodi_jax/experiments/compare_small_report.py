"""The compare_small report: OUT/compare_small.md (bits/byte per split, memory footprint, train
time, the paper's ordering) and its two plots, from the run folders of its rows."""
from __future__ import annotations

import os
from typing import Sequence

from melodi_jax.experiments.reporting import LABELS, clock, fmt, git_commit, machine, millions
from melodi_jax.experiments.reporting import pyplot, save_figure, style
from melodi_jax.experiments.run_folder import RunSummary, load_rows, read_json, setup_line
from melodi_jax.experiments.run_folder import summarize

COMPARE_SPLITS = (('books_bytes', 'validation'), ('books_bytes', 'test'), ('math_bytes', 'test'),
                  ('code_bytes', 'test'))
# The paper's perplexity ordering, best first: MELODI <= Memorizing <= Block-Recurrent <= TXL.
PAPER_ORDER = ('melodi', 'memorizing_dense', 'block_recurrent', 'transformer_xl')
# The bindings the Setup line shows.
SETUP_KEYS = ('ModelConfig.num_layers', 'ModelConfig.model_dim', 'ModelConfig.num_heads',
              'ModelConfig.head_dim', 'ModelConfig.mlp_dim', 'ModelConfig.window_length',
              'TrainConfig.segment_length', 'TrainConfig.batch_size', 'TrainConfig.num_steps',
              'TrainConfig.seed', 'OptimizerConfig.name', 'OptimizerConfig.peak_learning_rate')


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
  fig, ax = pyplot().subplots(figsize=(8, 5))
  drawn = False
  for row in rows:
    if row.curve:
      steps, values = zip(*row.curve)
      ax.plot(steps, values, markersize=4, label=LABELS.get(row.name, row.name),
              **style(row.name))
      drawn = True
  ax.set_xlabel('training step')
  ax.set_ylabel('bits/byte (books validation, first batches)')
  ax.set_title(title)
  ax.grid(alpha=0.3)
  save_figure(fig, path, [ax] if drawn else [])
  return drawn


def plot_tradeoff(rows: Sequence[RunSummary], path: str, task: str, split: str) -> bool:
  fig, ax = pyplot().subplots(figsize=(8, 5))
  drawn = False
  for row in rows:
    value = _bpb(row, task, split)
    if value is None:
      continue
    label = f'{LABELS.get(row.name, row.name)} ({value:.3f})'
    if not row.memory_floats:  # no memory: a reference line, it has no place on a log axis
      ax.axhline(value, linestyle='--', linewidth=1, label=label, color=style(row.name)['color'])
      continue
    ax.scatter(row.memory_floats, value, s=40, label=label, **style(row.name))
    drawn = True
  ax.set_xscale('log')
  ax.set_xlabel('memory kept between windows (floats per lane, log scale)')
  ax.set_ylabel(f'bits/byte ({task.split("_")[0]} {split})')
  ax.set_title('Quality vs memory footprint (lower left is better)')
  ax.grid(alpha=0.3)
  save_figure(fig, path, [ax] if drawn else [])
  return drawn


def memory_usage_table(rows: Sequence[RunSummary]) -> list[str]:
  """Lines of a table from DIR/memory_usage.json (written by the launch script), if any."""
  usages = []
  for row in rows:
    path = os.path.join(row.workdir, 'memory_usage.json')
    if os.path.isfile(path):
      usages.append((row, read_json(path)))
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
  summaries, missing = load_rows(runs, rows, summarize)
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
    cells = [LABELS.get(row.name, row.name), millions(row.parameters),
             f'{row.memory_floats:,}' if row.memory_floats is not None else '—', str(row.step),
             clock(row.train_seconds), fmt(row.tokens_per_second, ',.0f')]
    for task, split in COMPARE_SPLITS:
      result = row.evals.get((task, split))
      if result is None:
        cells.append('—')
        continue
      mark = '' if result.get('complete', True) else '*'
      if mark:
        capped.append(f'{result.get("batches")} batches ({result.get("tokens", 0):,.0f} '
                      'predicted tokens)')
      cells.append(fmt(result.get('bits_per_byte')) + mark)
    lines.append('| ' + ' | '.join(cells) + ' |')

  setup = setup_line(summaries, SETUP_KEYS)
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
