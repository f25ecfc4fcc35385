"""Reading a run folder: what the trainer and melodi_jax.experiments.evaluate_run write
(config.gin, train_metrics.jsonl, TensorBoard events, train_wall.jsonl, model_stats.json,
eval/<task>_<split>_<step>.json), summarized as a RunSummary."""
from __future__ import annotations

import dataclasses
import glob
import json
import os
import re
import statistics
from typing import Any, Callable, Sequence, TypeVar

_Row = TypeVar('_Row')

CURVE_TAG = 'eval/books_bytes_validation/bits_per_byte'


def read_json(path: str) -> Any:
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def read_jsonl(path: str) -> list[dict]:
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
      result = read_json(path)
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
  metrics = read_jsonl(os.path.join(workdir, 'train_metrics.jsonl'))
  if metrics:
    summary.step = max(int(row['step']) for row in metrics)
    rates = [row['tokens_per_second'] for row in metrics[1:] if 'tokens_per_second' in row]
    if rates:  # the first interval holds the compile
      summary.tokens_per_second = statistics.median(rates)
    by_step = {int(row['step']): row['bits_per_byte'] for row in metrics if 'bits_per_byte' in row}
    summary.train_curve = sorted(by_step.items())
  stats_path = os.path.join(workdir, 'model_stats.json')
  if os.path.isfile(stats_path):
    stats = read_json(stats_path)
    summary.parameters = stats.get('parameters')
    memory = stats.get('memory_floats_per_lane') or {}
    summary.memory_floats, summary.memory_parts = memory.get('floats'), memory.get('parts')
  wall = read_jsonl(os.path.join(workdir, 'train_wall.jsonl'))
  if wall:
    summary.train_seconds = sum(row['seconds'] for row in wall)
  summary.evals = latest_evals(workdir)
  summary.curve = tensorboard_scalars(workdir, curve_tag)
  return summary


def load_rows(folder: str, rows: Sequence[str],
              load: Callable[[str, str], _Row]) -> tuple[list[_Row], list[str]]:
  """(loaded, missing): load(name, FOLDER/name) of every row with a folder there, in the order
  of `rows`, and the names of the rows without one."""
  loaded = [load(name, os.path.join(folder, name)) for name in rows
            if os.path.isdir(os.path.join(folder, name))]
  missing = [name for name in rows if not os.path.isdir(os.path.join(folder, name))]
  return loaded, missing


def setup_line(summaries: Sequence[RunSummary], keys: Sequence[str]) -> str:
  """The bindings `keys` ('Class.parameter') of the first run's config.gin, as a report's Setup
  line: 'num_layers 4, ..., optimizer adamw' ('' without a run)."""
  settings = run_settings(summaries[0].workdir) if summaries else {}
  return ', '.join(f'{k.split(".")[1].replace("name", "optimizer")} {settings[k]}'
                   for k in keys if k in settings)


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
