"""results/memory_recall.md and its plots, from the small outputs each row saved:

  python -m melodi_jax.experiments.memory_recall.report --saved=results/memory_recall \
      --out=results --rows=vanilla,transformer_xl,... --command="..."

Reads <saved>/<row>/ (mqar_test_<step>.json from score.py, model_stats.json, memory_usage.json,
and <row>_k0/ + <row>/ with each curriculum stage's config.gin and train_metrics.jsonl; formation/
and reach/ with stage 3's and stage 4's N = 1 scores and gates, pairs/ and capacity/ with stage 5's
N = 1, 4 and N = 1..16 scores, when they ran), so the report rebuilds without the training folders.
"""
from __future__ import annotations

import glob
import json
import os
import re
from typing import Any, Sequence

from absl import flags

from melodi_jax.experiments.memory_recall.plots import plot, plot_capacity, plot_training
from melodi_jax.experiments.reporting import LABELS, git_commit, machine
from melodi_jax.train import cli


# The later curriculum stages' saved folders under <saved>/<row>/: stage 3, 4, 5a and 5b.
LATER_STAGES = ('formation', 'reach', 'pairs', 'capacity')


def _read_json(path: str) -> Any:
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def _gin_value(config_text: str, name: str) -> str | None:
  match = re.search(rf'^{re.escape(name)} = (.+)$', config_text, re.MULTILINE)
  return match.group(1).strip() if match else None


def reach(config_text: str) -> tuple[str, float | None]:
  """(how far back the model can see, in words; the windows beyond which it cannot recall by
  attention alone, None for no fixed horizon) from a run's operative config.gin."""
  stack = _gin_value(config_text, 'ModelConfig.stack') or ''
  window = int(_gin_value(config_text, 'ModelConfig.window_length'))
  layers = int(_gin_value(config_text, 'ModelConfig.num_layers'))
  xl = layers * window
  xl_text = (f'sliding window: each of {layers} layers sees the {window} tokens before a token, '
             f'so at most {xl} tokens = {layers} windows back')

  def value(name: str) -> int:
    return int(_gin_value(config_text, name))

  if 'VanillaStack' in stack:
    return f'attention inside the window only: nothing before the window ({window} tokens)', 0
  if 'TransformerXLStack' in stack:
    return xl_text, layers
  if 'MemorizingStack' in stack:
    slots = value('MemorizingStack.memory_slots')
    top_k = value('MemorizingStack.top_k')
    lookup = f'top-{top_k}' if top_k else 'dense'
    return (f'{xl_text}; plus a {lookup} lookup over the last {slots} keys/values of layer '
            f'{value("MemorizingStack.memory_layer")} = {slots // window} windows'), slots // window
  if 'MemLongStack' in stack:
    chunks = value('MemLongStack.chunks')
    return (f'{xl_text}; plus the top-{value("MemLongStack.top_k")} of {chunks} stored windows '
            f'(chunks), retrieved by similarity; a full index evicts its least-retrieved chunk, '
            f'not its oldest, so a chunk that was retrieved can stay longer than {chunks} windows '
            f'(no fixed horizon)'), None
  if 'BlockRecurrentStack' in stack:
    return (f'{xl_text}; plus {value("BlockRecurrentStack.num_states")} recurrent states carried '
            'window to window (compressive, no fixed horizon)'), None
  if 'MelodiStack' in stack:
    short = value('MelodiStack.short_term_slots')
    long_layers = _gin_value(config_text, 'MelodiStack.long_term_layers') or '()'
    slots, increment = value('MelodiStack.long_term_slots'), value('MelodiStack.long_term_increment')
    parts = []
    if short:
      parts.append(f'short-term memory of {short} tokens per layer carried window to window '
                   '(compressive, no fixed horizon)')
    if long_layers.strip('() ,'):
      parts.append(f'a long-term FIFO of {slots} slots ({increment} per window) = the last '
                   f'{slots // increment} windows')
    horizon = None if short else (slots // increment if long_layers.strip('() ,') else 0)
    return '; '.join(parts) or 'no memory', horizon
  return f'{stack}: see its config', None


def load_row(saved: str, row: str) -> dict | None:
  """The saved outputs of one row, or None when it has not finished."""
  folder = os.path.join(saved, row)
  scores = sorted(glob.glob(os.path.join(folder, 'mqar_test_*.json')),
                  key=lambda p: int(re.findall(r'(\d+)\.json$', p)[0]))
  if not scores:
    return None
  with open(os.path.join(folder, row, 'config.gin'), encoding='utf-8') as f:
    config_text = f.read()
  stages = {}
  for stage in (f'{row}_k0', row):
    path = os.path.join(folder, stage, 'train_metrics.jsonl')
    with open(path, encoding='utf-8') as f:
      metrics = [json.loads(line) for line in f if line.strip()]
    walls = []
    wall_path = os.path.join(folder, stage, 'train_wall.jsonl')
    if os.path.isfile(wall_path):
      with open(wall_path, encoding='utf-8') as f:
        walls = [json.loads(line) for line in f if line.strip()]
    stages[stage] = {'metrics': [m for m in metrics if 'loss' in m],
                     'seconds': sum(w['seconds'] for w in walls)}
  usage_path = os.path.join(folder, 'memory_usage.json')
  return {'row': row, 'score': _read_json(scores[-1]), 'config': config_text,
          'stats': _read_json(os.path.join(folder, 'model_stats.json')),
          'usage': _read_json(usage_path) if os.path.isfile(usage_path) else {},
          'stages': stages,
          'retrieval': _optional_json(os.path.join(folder, 'retrieval_hits.json'))} | {
              stage: _load_stage(os.path.join(folder, stage)) for stage in LATER_STAGES}


def _load_stage(folder: str) -> dict | None:
  """A later stage's saved outputs (stage 3 formation/, 4 reach/, 5 capacity/: its partial test
  grid's scores, gates, seconds), or None when it has not run."""
  scores = glob.glob(os.path.join(folder, 'mqar_test_*_n*.json'))
  if not scores:
    return None
  wall_path = os.path.join(folder, 'train_wall.jsonl')
  seconds = 0.0
  if os.path.isfile(wall_path):
    with open(wall_path, encoding='utf-8') as f:
      seconds = sum(json.loads(line)['seconds'] for line in f if line.strip())
  usage_path = os.path.join(folder, 'memory_usage.json')
  config_path = os.path.join(folder, 'config.gin')
  config_text = ''
  if os.path.isfile(config_path):
    with open(config_path, encoding='utf-8') as f:
      config_text = f.read()
  return {'score': _read_json(scores[0]), 'seconds': seconds,
          'peak_learning_rate': peak_learning_rate(config_text),
          'usage': _read_json(usage_path) if os.path.isfile(usage_path) else {},
          'retrieval': _optional_json(os.path.join(folder, 'retrieval_hits.json'))}


def peak_learning_rate(config_text: str) -> float | None:
  """OptimizerConfig.peak_learning_rate from an operative config.gin (None when absent)."""
  found = re.findall(r'^OptimizerConfig\.peak_learning_rate\s*=\s*([0-9.eE+-]+)\s*$',
                     config_text, flags=re.M)
  return float(found[-1]) if found else None


def _optional_json(path: str) -> dict | None:
  return _read_json(path) if os.path.isfile(path) else None


def retrieval_table(hits: dict) -> list[str]:
  """The retrieval_hits diagnostic (MemLong: is the store's chunk retrieved at the query?)."""
  def fmt(x):
    return '—' if x is None else f'{x:.2f}'
  lines = [f'N = {hits["pairs"]}, top-{hits["top_k"]} of {hits["chunks"]} chunks, '
           f'{hits["rows"][0]["documents"] if hits["rows"] else 0} episodes per k '
           '(`python -m melodi_jax.experiments.memory_recall.retrieval_hits`):', '',
           '| k | chunks to choose from | store chunk in the index | retrieved | at random | '
           'recall | recall when retrieved | when not |', '|---|---|---|---|---|---|---|---|']
  for row in hits['rows']:
    lines.append(f'| {row["distance"]} | {row["candidates"]} | '
                 f'{fmt(row.get("indexed_rate"))} | {row["hit_rate"]:.2f} | '
                 f'{row["random_hit_rate"]:.2f} | {row["recall"]:.2f} | '
                 f'{fmt(row["recall_when_retrieved"])} | {fmt(row["recall_when_missed"])} |')
  return lines


def _cell_table(data: dict) -> list[str]:
  cells = data['score']['cells']
  distances = sorted({c['distance'] for c in cells})
  pairs = sorted({c['pairs'] for c in cells})
  by = {(c['pairs'], c['distance']): c for c in cells}
  lines = ['| N \\ k | ' + ' | '.join(str(k) for k in distances) + ' |',
           '|---|' + '---|' * len(distances)]
  for n in pairs:
    row = []
    for k in distances:
      c = by.get((n, k))
      row.append(f'{c["accuracy"]:.2f} ± {c["standard_error"]:.2f}' if c else 'n/a')
    lines.append(f'| {n} | ' + ' | '.join(row) + ' |')
  return lines


def _usage_text(usage: dict) -> str:
  if not usage:
    return 'not measured'
  gates = '; '.join(f'{name} 1 - g = {g["memory_weight"]:.3f} ({g["min"]:.2f}..{g["max"]:.2f})'
                    for name, g in usage.get('gates', {}).items())
  masses = '; '.join(
      f'{name.split("/")[-2] if "/" in name else name} {mass:.2f} (uniform '
      f'{usage["uniform_mass_on_memory"][name]:.2f})'
      for name, mass in usage.get('attention_mass_on_memory', {}).items())
  return (f'gates (weight on memory): {gates or "none"}. Self-attention mass on memory keys: '
          f'{masses or "none"}.')


def by_windows_back(data: dict) -> dict[int, tuple[float, int]]:
  """{whole windows between a query and its stored value: (accuracy, queries)}, all cells pooled."""
  pooled: dict[int, list[float]] = {}
  for cell in data['score']['cells']:
    for back, (hits, count) in cell['source_windows'].items():
      entry = pooled.setdefault(int(back), [0.0, 0.0])
      entry[0] += hits
      entry[1] += count
  return {back: (hits / count, int(count)) for back, (hits, count) in sorted(pooled.items())}


def fifo_span(config_text: str, default: int = 32) -> int:
  """How many windows back the long-term FIFO reaches (reach()'s long-term part)."""
  match = re.search(r'= the last (\d+) windows', reach(config_text)[0])
  return int(match.group(1)) if match else default


def pairs_recalled(cells: Sequence[dict], span: int) -> dict[int, float]:
  """Per N: N x accuracy (pairs recalled per episode), averaged over k = 1 .. span."""
  by_n = {}
  for c in cells:
    if 1 <= c['distance'] <= span:
      by_n.setdefault(c['pairs'], []).append(c['pairs'] * c['accuracy'])
  return {n: sum(v) / len(v) for n, v in sorted(by_n.items())}


def _above_chance(cell: dict, chance: float) -> bool:
  return cell['accuracy'] > chance + 3 * cell['standard_error']


def expectations(data: dict, chance: float) -> list[str]:
  """What the row is expected to show (from its reach) and whether the measured cells show it."""
  row, cells = data['row'], data['score']['cells']
  by = {(c['pairs'], c['distance']): c for c in cells}
  _, horizon = reach(data['config'])
  layers = int(_gin_value(data['config'], 'ModelConfig.num_layers'))
  lines = []

  def check(claim: str, ok: bool, detail: str) -> None:
    lines.append(f'- {claim}: **{"holds" if ok else "does not hold"}** ({detail}).')

  k0 = by.get((4, 0))
  if k0:
    check('k = 0, N = 4 >= 0.95 (the in-window recall circuit formed)', k0['accuracy'] >= 0.95,
          f'{k0["accuracy"]:.3f}')
  far = [c for c in cells if horizon is not None and c['distance'] > horizon]
  if row == 'vanilla':
    far = [c for c in cells if c['distance'] >= 1]
  if far:
    worst = max(far, key=lambda c: c['accuracy'])
    check(f'at chance (within 3 standard errors of {chance:.3f}) for every k beyond its reach '
          f'(k > {horizon if row != "vanilla" else 0})', not any(_above_chance(c, chance)
                                                                for c in far),
          f'highest {worst["accuracy"]:.3f} ± {worst["standard_error"]:.3f} at N = '
          f'{worst["pairs"]}, k = {worst["distance"]}')
  if row == 'transformer_xl':
    back = by_windows_back(data)
    if 0 in back or 1 in back:
      near = [back[b] for b in (0,) if b in back]
      acc, count = near[0] if near else (float('nan'), 0)
      check('>= 0.95 on the values less than one window back (inside one layer\'s W-token span)',
            acc >= 0.95, f'{acc:.3f} over {count} queries')
    beyond = {b: v for b, v in back.items() if b >= layers}
    if beyond:
      acc = sum(a * n for a, n in beyond.values()) / sum(n for _, n in beyond.values())
      check(f'at chance on values {layers} or more windows back (beyond L x W)',
            acc < chance * 3, f'{acc:.3f} pooled')
  if row.startswith('memorizing') or row == 'memlong':
    # MemLong's index keeps a retrieved chunk past its C windows (no fixed horizon): every k.
    inside = [c for c in cells if 1 <= c['distance'] <= (horizon or float('inf'))]
    if inside:
      worst = min(inside, key=lambda c: c['accuracy'])
      check(f'>= 0.9 at every k inside its buffer '
            f'({f"1..{horizon}" if horizon else "every k >= 1: no fixed horizon"})',
            all(c['accuracy'] >= 0.9 for c in inside),
            f'lowest {worst["accuracy"]:.3f} at N = {worst["pairs"]}, k = {worst["distance"]}')
  if row.startswith('melodi') and data.get('reach'):
    # The compressed memories' reach is measured after stage 4 (N = 1 only, k = 2..8 trained).
    source = [c for c in data['reach']['score']['cells'] if c['pairs'] == 1]
    has_fifo = re.search(r'= the last (\d+) windows', reach(data['config'])[0])
    if not has_fifo:   # a short-term recurrence only: no fixed horizon; how far it carries
      carried = [c['distance'] for c in source if c['distance'] >= 1 and _above_chance(c, chance)]
      one = next((c for c in source if c['distance'] == 1), None)
      if one:
        check('N = 1 above chance + 3 standard errors one window back (k = 1), after stage 4',
              _above_chance(one, chance), f'{one["accuracy"]:.3f} ± {one["standard_error"]:.3f}; '
              f'above chance at k = {", ".join(map(str, carried)) or "none"}')
    else:
      span = fifo_span(data['config'])
      inside = [c for c in source if 1 <= c['distance'] <= span]
      if inside:
        worst = min(inside, key=lambda c: c['accuracy'] - 3 * c['standard_error'])
        check(f'N = 1 above chance + 3 standard errors at every k up to the FIFO span ({span}), '
              'after stage 4', all(_above_chance(c, chance) for c in inside),
              f'weakest {worst["accuracy"]:.3f} ± {worst["standard_error"]:.3f} at k = '
              f'{worst["distance"]}')
  return lines


def wall_time_text(saved: str) -> str:
  """The whole benchmark's wall time from the launch script's ledger (benchmark_wall.jsonl: one
  line per invocation that trained, interrupted ones included), in one sentence.

  A ledger line with a "discarded" key is not an invocation: it names a run that an invocation
  trained and that was then thrown away (e.g. a budget tried and changed), with its
  "queue_seconds" (the time one queue spent on it, from the run log) and the "jobs" it ran beside;
  queue_seconds / jobs of wall time is then counted apart from the results' own.
  """
  path = os.path.join(saved, 'benchmark_wall.jsonl')
  if not os.path.isfile(path):
    return ('Wall time of the whole benchmark: not recorded with these outputs (the per-row train '
            'time below counts training only).')
  with open(path, encoding='utf-8') as f:
    lines = [json.loads(line) for line in f if line.strip()]
  runs = [line for line in lines if 'discarded' not in line]
  discarded = [line for line in lines if 'discarded' in line]
  seconds = sum(run['seconds'] for run in runs)
  jobs = sorted({run['jobs'] for run in runs})
  machines = sorted({f'{run["cores"]} cores, {run["cpu"]}' for run in runs})
  stopped = sum(1 for run in runs if run['status'] != 0)
  text = (f'Wall time of the whole benchmark: {seconds / 3600:.2f} h ({seconds / 60:.0f} min) '
          f'over {len(runs)} invocation(s) of the command ({stopped} interrupted and resumed), '
          f'{" / ".join(str(j) for j in jobs)} row(s) trained at once (JOBS), on '
          f'{"; ".join(machines)}: training, scoring and measuring, every stage and row '
          f'(`{os.path.basename(path)}`)')
  if not discarded:
    return text + '.'
  wasted = sum(line['queue_seconds'] / line['jobs'] for line in discarded)
  return (text + f'. Of that, ~{wasted / 60:.0f} min went to {len(discarded)} run(s) discarded '
          f'since ({"; ".join(line["discarded"] for line in discarded)}: their queue time / JOBS, '
          f'from the run log), so these results took ~{(seconds - wasted) / 3600:.2f} h '
          f'({(seconds - wasted) / 60:.0f} min).')


def _rate(rate: float | None) -> str:
  return 'not recorded' if rate is None else f'{rate:g}'


def _n1_stage_section(loaded: Sequence[dict], stage: str, out: str, chance: float, title: str,
                      intro: str) -> list[str]:
  """A later stage's N = 1 table (a row per model that ran it, the others named) and its plot."""
  ran = [data for data in loaded if data[stage]]
  if not ran:
    return []
  png = f'memory_recall_{stage}.png'
  plot([dict(data, score=data[stage]['score']) for data in ran], os.path.join(out, png), chance)
  distances = sorted({c['distance'] for d in ran for c in d[stage]['score']['cells']})
  text = [title, '', intro, '',
          '| model | ' + ' | '.join(f'k = {k}' for k in distances) + ' | weight on memory |',
          '|---|' + '---|' * (len(distances) + 1)]
  for data in ran:
    by = {c['distance']: c for c in data[stage]['score']['cells']}
    gates = data[stage]['usage'].get('gates', {})
    gate = '; '.join(f'{g["memory_weight"]:.3f}' for g in gates.values()) or '—'
    text.append(f'| {LABELS.get(data["row"], data["row"])} | ' + ' | '.join(
        f'{by[k]["accuracy"]:.2f} ± {by[k]["standard_error"]:.2f}' if k in by else 'n/a'
        for k in distances) + f' | {gate} |')
  rates = {}
  for data in ran:
    rates.setdefault(data[stage]['peak_learning_rate'], []).append(
        LABELS.get(data['row'], data['row']))
  if len(rates) == 1:
    text += ['', f'Peak learning rate (each run\'s config.gin): {_rate(next(iter(rates)))}, '
             'every row.']
  else:   # runs from different protocols side by side: say which is which
    text += ['', 'Peak learning rate (each run\'s config.gin) differs between rows: ' + '; '.join(
        f'{_rate(rate)}: {", ".join(names)}' for rate, names in rates.items()) + '.']
  pending = [LABELS.get(d['row'], d['row']) for d in loaded if not d[stage]]
  text += [''] + ([f'{title.split(":")[0][3:]} not run yet: {", ".join(pending)}.', '']
                  if pending else [])
  return text + [f'![N = 1 after {stage}]({png})', '']


def write(saved: str, out: str, rows: Sequence[str], command: str) -> str:
  loaded = [data for data in (load_row(saved, row) for row in rows) if data]
  missing = [row for row in rows if row not in {d['row'] for d in loaded}]
  if not loaded:
    raise cli.UserError(f'no finished row under {saved} (a row needs its stage-2 test score, '
                        'mqar_test_<step>.json): run launch/experiments/memory_recall.sh with '
                        'stage 2, or point --saved (OUT_DIR) at the folder holding those outputs')
  first = loaded[0]
  config = first['score']['config']
  chance = first['score']['chance']
  os.makedirs(out, exist_ok=True)
  plot(loaded, os.path.join(out, 'memory_recall.png'), chance)
  plot_training(loaded, os.path.join(out, 'memory_recall_training.png'))
  stage1 = first['stages'][f'{first["row"]}_k0']['metrics']
  stage2 = first['stages'][first['row']]['metrics']
  text = [
      '# Multi-query associative recall across windows',
      '',
      f'Generated by `{command}` (report: `python -m melodi_jax.experiments.memory_recall.report`'
      f' from the saved outputs in `{saved}`), commit {git_commit()}, {machine()}.',
      '',
      f'Task (`melodi_jax/data/mqar.py`, {config["window_length"]}-token windows): N key -> value '
      f'pairs stored, then queried in a new order exactly k windows later (k = 0: right after, in '
      f'the same window); keys, values and filler from disjoint sets of {config["key_vocab"]}, '
      f'{config["value_vocab"]} and {config["filler_vocab"]} token ids. Score: a value is recalled '
      f'when the argmax over the whole vocabulary at its key is that value (teacher-forced), '
      f'accuracy per (N, k) = mean over {config["eval_documents"]} test documents ± its standard '
      f'error; chance = 1 / {config["value_vocab"]} = {chance:.3f}. Each test document is read '
      'from its start segment by segment with the memory carried (reset at the document start).',
      '',
      f'Training (every row the same): stage 1, {stage1[-1]["step"] if stage1 else "?"} steps of '
      f'k = 0 only; stage 2, warm-started from it, {stage2[-1]["step"] if stage2 else "?"} steps '
      f'of k in {config["distances"]}; N in {config["num_pairs"]}; '
      f'{first["score"]["segment_length"]}-token segments, one train document per segment (so '
      'the loss reaches every memory write); loss on the query values only: the main table. '
      'Stages 3-5 (formation, reach, capacity) follow in their own sections. Model and optimizer: '
      'the operative config.gin saved with each row.',
      '',
      wall_time_text(saved),
      '',
  ]
  if missing:
    text += [f'Rows not finished yet: {", ".join(missing)}.', '']
  if os.path.isfile(os.path.join(saved, 'diagnostics', 'README.md')):
    text += [f'A row below its expectation is diagnosed in '
             f'[{saved}/diagnostics/README.md]({os.path.relpath(saved, out)}/diagnostics/README.md).',
             '']
  text += ['| model | reach (how far back it can see) | memory floats / lane | k = 0, N = 4 | '
           'train time (all stages) |', '|---|---|---|---|---|']
  for data in loaded:
    note, _ = reach(data['config'])
    by = {(c['pairs'], c['distance']): c for c in data['score']['cells']}
    k0 = by.get((4, 0))
    k0_text = f'{k0["accuracy"]:.2f} ± {k0["standard_error"]:.2f}' if k0 else 'n/a'
    seconds = sum(s['seconds'] for s in data['stages'].values()) + sum(
        data[stage]['seconds'] for stage in LATER_STAGES if data[stage])
    floats = data['stats'].get('memory_floats_per_lane', {})
    floats = floats.get('floats') if isinstance(floats, dict) else floats
    text.append(f'| {LABELS.get(data["row"], data["row"])} | {note} | '
                f'{floats if floats is not None else "—"} | {k0_text} | {seconds / 60:.0f} min |')
  text += ['', '![accuracy per k](memory_recall.png)', '',
           '![training loss](memory_recall_training.png)', '']
  text += _n1_stage_section(
      loaded, 'formation', out, chance, '## Stage 3: formation (N = 1, k = 1)',
      'From stage 1, 200 steps of N = 1 only, asked exactly k = 1 window later, 64 lanes '
      '(`configs/experiments/memory_recall/stage_formation.gin`): the whole loss on the one cell '
      'where a memory\'s write -> read circuit first forms (stage 2 puts ~3% of its loss there: '
      '`results/memory_recall/diagnostics/signal/`). N = 1 of the test grid:')
  text += _n1_stage_section(
      loaded, 'reach', out, chance, '## Stage 4: reach (N = 1)',
      'From stage 3, 300 more steps of N = 1 only, asked k = 2, 4 or 8 windows later '
      '(`configs/experiments/memory_recall/stage_reach.gin`): a training signal beyond the '
      'reach of the short-term recurrence. It asks only for k >= 2, so a row that cannot '
      'reach that far is trained on targets it cannot predict and unlearns recall (its '
      'k = 0, 1 fall): the stage-2 grid stays every row\'s main table. N = 1 of the test '
      'grid:')
  for data in (data for data in loaded if data['capacity']):
    label, cells = LABELS.get(data['row'], data['row']), data['capacity']['score']['cells']
    png = f'memory_recall_capacity_{data["row"]}.png'
    plot_capacity(data, cells, os.path.join(out, png), chance)
    text += [f'## Stage 5: capacity ({label})', '',
             'From stage 1, 200 steps of N = 2 pairs asked k = 1 window later '
             '(`configs/experiments/memory_recall/stage_pairs.gin`: stage 3 with two pairs, so the '
             'write that forms keeps each value with its key; with one pair it keeps the value '
             'alone: results/memory_recall/diagnostics/README.md, "MELODI\'s capacity"); then 300 '
             'steps of N = 1, 2, 4 or 8 pairs asked k = 2, 4 or 8 windows later '
             '(`configs/experiments/memory_recall/stage_capacity.gin`), scored on N = 1..16 of the '
             'test grid: how many pairs the memory holds, and how far. Peak learning rate (their '
             f'config.gin): {_rate((data["pairs"] or {}).get("peak_learning_rate"))}, then '
             f'{_rate(data["capacity"]["peak_learning_rate"])}.', '']
    if data['pairs']:
      text += ['After the two-pair formation (N = 1, 4 of the test grid):', '']
      text += _cell_table({'score': data['pairs']['score']})
      text += ['', 'After capacity:', '']
    text += _cell_table({'score': data['capacity']['score']})
    span = fifo_span(data['config'])
    text += ['', f'Pairs recalled per episode (N x accuracy, mean over k = 1..{span}): ' + ', '.join(
        f'N = {n}: {v:.2f}' for n, v in pairs_recalled(cells, span).items()) + '.']
    gates = data['capacity']['usage'].get('gates', {})
    text += ['', 'Weight on memory: ' + ('; '.join(f'{name} {g["memory_weight"]:.3f}'
                                                   for name, g in gates.items()) or 'none') + '.',
             '', f'![capacity]({png})', '']
  for data in loaded:
    text += [f'## {LABELS.get(data["row"], data["row"])}', '',
             f'Reach: {reach(data["config"])[0]}. Step {data["score"]["step"]}.', '']
    text += _cell_table(data)
    back = by_windows_back(data)
    text += ['', 'Accuracy by how far back the value is (whole windows between the query\'s key '
             'and the stored value; every N and k pooled): ' + ', '.join(
                 f'{b}: {acc:.2f} ({count})' for b, (acc, count) in back.items()) + '.', '']
    text += expectations(data, chance)
    text += ['', _usage_text(data['usage']), '']
    for stage, hits in (('stage 2', data.get('retrieval')),
                        ('stage 4', (data.get('reach') or {}).get('retrieval'))):
      if hits:
        text += [f'Retrieval of the store\'s chunk by the query\'s window ({stage}): '] + [
            ''] + retrieval_table(hits) + ['']
  path = os.path.join(out, 'memory_recall.md')
  with open(path + '.tmp', 'w', encoding='utf-8') as f:
    f.write('\n'.join(text) + '\n')
  os.replace(path + '.tmp', path)
  return path


def define_flags() -> None:
  """The command-line flags (defined only when run as a program: the library stays importable
  beside other entry points)."""
  flags.DEFINE_string('saved', 'results/memory_recall', 'Folder of the rows\' saved outputs.')
  flags.DEFINE_string('out', 'results', 'Where memory_recall.md and its plots go.')
  flags.DEFINE_list('rows', list(LABELS), 'Rows, in table order.')
  flags.DEFINE_string('command', 'bash launch/experiments/memory_recall.sh', 'The command to cite.')


FLAGS = flags.FLAGS


def main(argv: Sequence[str]) -> None:
  del argv
  print(f'-> {write(FLAGS.saved, FLAGS.out, FLAGS.rows, FLAGS.command)}')


if __name__ == '__main__':
  define_flags()
  cli.run(main)
