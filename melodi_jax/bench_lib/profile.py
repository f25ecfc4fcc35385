"""Where a compiled step's time goes: a jax.profiler trace summed by HLO op and by model part.

The CPU (and GPU) trace has one event per executed HLO thunk, named by its HLO op; each op's
metadata in the compiled HLO names the jax source (e.g. `transpose(jvp(stack))/layer_03/attention
/...`), so time can be grouped by layer part (attention, mlp, mixers, ...) and by forward/backward.
"""

import collections
import glob
import gzip
import json
import os
import re
import tempfile

import jax

_CONTAINERS = ('while', 'conditional', 'call')   # events that contain other op events


def _op_sources(hlo_text: str) -> dict[str, str]:
  """HLO instruction name -> jax op_name metadata (for fusions: their first named instruction)."""
  sources = {}
  for match in re.finditer(r'%([\w.\-]+) = [^\n]*?op_name="([^"]+)"', hlo_text):
    sources.setdefault(match.group(1), match.group(2))
  return sources


def category(op_name: str) -> str:
  """A coarse label of a jax op_name: '<fwd|bwd> <layer part>' (e.g. 'bwd attention')."""
  direction = 'bwd' if 'transpose(' in op_name else 'fwd'
  match = re.search(r'layer_\d+/([\w]+)(?:/([\w]+))?', op_name)
  if match:
    part = match.group(1)
    if part == 'attention' and 'attention._project' in op_name:  # the fused q/k/v projections
      return f'{direction} attention/projections'
    if part == 'attention' and match.group(2) in ('position_bias', 'query', 'key', 'value',
                                                    'out', 'norm'):
      part = f'attention/{match.group(2)}'
    return f'{direction} {part}'
  for part in ('optimizer', 'adam', 'embed', 'logits', 'final_norm', 'log_softmax',
               'take_along_axis'):
    if part in op_name:
      return f'{direction} {part}'
  if 'stack' in op_name:
    return f'{direction} stack (other)'
  return f'{direction} other'


def profile(run, state, steps: int, compiled_text: str) -> dict:
  """Runs state = run(state) `steps` times under the profiler; returns seconds per step by op and
  by category (top entries), and the state."""
  logdir = tempfile.mkdtemp(prefix='melodi_profile_')
  with jax.profiler.trace(logdir, create_perfetto_trace=True):
    for _ in range(steps):
      state = run(state)
      jax.block_until_ready(state)
  traces = glob.glob(os.path.join(logdir, '**', 'perfetto_trace.json.gz'), recursive=True)
  if not traces:
    return {'error': 'no perfetto trace written'}, state
  with gzip.open(traces[0]) as f:
    data = json.load(f)
  events = data['traceEvents'] if isinstance(data, dict) else data
  by_op = collections.Counter()
  for event in events:
    op = (event.get('args') or {}).get('hlo_op')
    if event.get('ph') == 'X' and op and not op.startswith(_CONTAINERS):
      by_op[op] += event.get('dur', 0.0) * 1e-6 / steps
  sources = _op_sources(compiled_text)
  by_category = collections.Counter()
  for op, seconds in by_op.items():
    by_category[category(sources.get(op, op))] += seconds
  return {'total_s': sum(by_op.values()),
          'by_category': dict(by_category.most_common()),
          'top_ops': [(op, seconds, sources.get(op, '')) for op, seconds in by_op.most_common(25)]
          }, state
