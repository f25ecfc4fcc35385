"""What every experiment report shares: model labels, plot styles and how a figure is written,
number formatting, and the machine and commit lines of a report's header."""
from __future__ import annotations

import math
import os
import platform
import subprocess
from typing import Any, Sequence

LABELS = {
    'vanilla': 'vanilla (no memory)', 'transformer_xl': 'Transformer-XL',
    'block_recurrent': 'Block-Recurrent', 'memorizing_dense': 'Memorizing (dense)',
    'memorizing_topk': 'Memorizing (top-k)', 'memlong': 'MemLong-style', 'melodi': 'MELODI S+L',
    'melodi_short_only': 'MELODI short-term only', 'melodi_long_only': 'MELODI long-term only',
    'melodi_no_mix': 'MELODI no summary branching',
}


def style(name: str) -> dict:
  """The same color (and marker) for a model in every plot: its place in LABELS."""
  names = list(LABELS)
  index = names.index(name) if name in names else len(names)
  return {'color': f'C{index % 10}', 'marker': 'osD^v<>ph*'[index % 10]}


def pyplot():
  """matplotlib.pyplot on the Agg backend (PNG files, no display)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def save_figure(fig, path: str, legends: Sequence[Any] = (), **legend_options) -> None:
  """Draws the legend of every axis in `legends` (fontsize 8 unless `legend_options` say
  otherwise), lays the figure out, writes it to `path` (PNG, 110 dpi) and closes it."""
  for axis in legends:
    axis.legend(**{'fontsize': 8, **legend_options})
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  pyplot().close(fig)


def fmt(value, spec: str = '.3f', missing: str = '—') -> str:
  if value is None or (isinstance(value, float) and not math.isfinite(value)):
    return missing
  return format(value, spec)


def millions(count: int | None) -> str:
  if count is None:
    return '—'
  return f'{count / 1e6:.2f}M' if count >= 1e6 else f'{count / 1e3:.1f}k'


def clock(seconds: float | None) -> str:
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
