"""The memory_recall report's figures: accuracy per k (a panel per N), the training loss over the
curriculum's stages, and the capacity curve (accuracy against N, a line per k)."""
from __future__ import annotations

from typing import Sequence

from melodi_jax.experiments.reporting import LABELS, pyplot, save_figure, style


def plot(rows: Sequence[dict], path: str, chance: float) -> None:
  pairs = sorted({c['pairs'] for data in rows for c in data['score']['cells']})
  fig, axes = pyplot().subplots(1, len(pairs), figsize=(5 * len(pairs), 4), sharey=True,
                                squeeze=False)
  for ax, n in zip(axes[0], pairs):
    for data in rows:
      cells = sorted((c for c in data['score']['cells'] if c['pairs'] == n),
                     key=lambda c: c['distance'])
      ax.errorbar([c['distance'] for c in cells], [c['accuracy'] for c in cells],
                  yerr=[c['standard_error'] for c in cells], capsize=2,
                  label=LABELS.get(data['row'], data['row']), **style(data['row']))
    ax.axhline(chance, color='gray', linestyle=':', label=f'chance ({chance:.3f})')
    ax.set_xscale('symlog', linthresh=1)
    distances = sorted({c['distance'] for d in rows for c in d['score']['cells']})
    ax.set_xlim(-0.2, max(distances) * 1.3)
    ax.set_xticks(distances)
    ax.set_xticklabels([str(k) for k in distances])
    ax.set_xlabel('k: windows between store and query')
    ax.set_title(f'N = {n} pairs')
    ax.set_ylim(-0.02, 1.02)
  axes[0][0].set_ylabel('value accuracy (test)')
  save_figure(fig, path, [axes[0][-1]], fontsize=7, loc='center left', bbox_to_anchor=(1.0, 0.5))


def plot_training(rows: Sequence[dict], path: str) -> None:
  fig, ax = pyplot().subplots(figsize=(7, 4))
  for data in rows:
    offset = 0
    for stage, info in data['stages'].items():
      steps = [m['step'] + offset for m in info['metrics']]
      ax.plot(steps, [m['loss'] for m in info['metrics']],
              label=LABELS.get(data['row'], data['row']) if stage == data['row'] else None,
              color=style(data['row'])['color'], linewidth=1)
      offset = steps[-1] if steps else offset
  ax.set_xlabel('step (stage 1, k = 0, then stage 2)')
  ax.set_ylabel('train loss on the query values (nats)')
  save_figure(fig, path, [ax], fontsize=7)


def plot_capacity(data: dict, cells: Sequence[dict], path: str, chance: float) -> None:
  """Accuracy against N (log scale), one line per k, of one row's capacity stage."""
  fig, ax = pyplot().subplots(figsize=(6, 4))
  for k in sorted({c['distance'] for c in cells}):
    line = sorted((c for c in cells if c['distance'] == k), key=lambda c: c['pairs'])
    ax.errorbar([c['pairs'] for c in line], [c['accuracy'] for c in line],
                yerr=[c['standard_error'] for c in line], capsize=2, label=f'k = {k}')
  ax.axhline(chance, color='gray', linestyle=':', label=f'chance ({chance:.3f})')
  ax.set_xscale('log', base=2)
  pairs = sorted({c['pairs'] for c in cells})
  ax.set_xticks(pairs)
  ax.set_xticklabels([str(n) for n in pairs])
  ax.set_xlabel('N: pairs stored')
  ax.set_ylabel('value accuracy (test)')
  ax.set_ylim(-0.02, 1.02)
  ax.set_title(f'{LABELS.get(data["row"], data["row"])}: capacity')
  save_figure(fig, path, [ax], fontsize=7, loc='center left', bbox_to_anchor=(1.0, 0.5))
