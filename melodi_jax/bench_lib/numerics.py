"""Numerics against a git revision: a speed change must leave what the models compute unchanged.

  python -m melodi_jax.bench_lib.numerics --against=a7bfddc [--kinds=melodi,transformer_xl] [--json]

For every model kind (configs/models/*.gin at configs/sizes/small.gin, this tree's files on both
sides), `numerics_probe.py` runs once in this tree and once in a checkout of --against (a
temporary git worktree, that revision's package doing the computing), the second with the
first's initial parameters: the logits of one fixed batch (2 lanes x 4 windows of 64 tokens, a
document start mid-segment), its next-token loss, and the loss after one SGD step of its gradient
(which goes through the backward pass). Prints the largest logit difference and the two losses
per kind, and exits 1 when any differs beyond --atol / --rtol (float32 summation order only).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from typing import Sequence

from absl import flags
import numpy as np

from melodi_jax.bench_lib import worktree
from melodi_jax.bench_lib.worktree import REPO, checkout
from melodi_jax.train import cli

worktree.define_against_flag()
flags.DEFINE_list('kinds', None, 'model kinds (configs/models/<kind>.gin; default: all)')
flags.DEFINE_float('atol', 1e-4, 'absolute tolerance on logits and losses')
flags.DEFINE_float('rtol', 1e-4, 'relative tolerance on logits and losses')
cli.define_json_flag()

PROBE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'numerics_probe.py')
CONFIGS = os.path.join(REPO, 'configs')


def probe(tree: str, kinds: Sequence[str], out: str, params: str | None = None) -> dict:
  """Runs numerics_probe.py with `tree`'s package; returns its arrays."""
  env = dict(os.environ, PYTHONPATH=tree)
  result = subprocess.run([sys.executable, PROBE, out, ','.join(kinds), CONFIGS] +
                          ([params] if params else []), cwd=tree, env=env, capture_output=True,
                          text=True)
  if result.returncode != 0:
    tail = '\n'.join(result.stderr.strip().splitlines()[-5:])
    raise cli.UserError(f'the numerics probe failed in {tree} (exit {result.returncode}): {tail}')
  return dict(np.load(out))


def compare(kind: str, tree: dict, other: dict, atol: float, rtol: float) -> dict:
  """One kind's figures; `ok` when logits and both losses agree within tolerance."""
  for side, found in (('this tree', tree), ('--against', other)):
    if f'{kind}/error' in found:
      return {'kind': kind, 'ok': False, 'error': f'{side}: {found[f"{kind}/error"]}'}
  row = {'kind': kind,
         'max_logit_difference': float(np.max(np.abs(tree[f'{kind}/logits'] -
                                                      other[f'{kind}/logits'])))}
  ok = np.allclose(tree[f'{kind}/logits'], other[f'{kind}/logits'], atol=atol, rtol=rtol)
  for name in ('loss', 'loss_after_step'):
    row[name] = (float(other[f'{kind}/{name}']), float(tree[f'{kind}/{name}']))
    ok &= bool(np.isclose(*row[name], atol=atol, rtol=rtol))
  row['ok'] = bool(ok)
  return row


def main(argv: Sequence[str]) -> None:
  FLAGS = flags.FLAGS
  if len(argv) > 1:
    raise cli.UserError(f'unexpected arguments {argv[1:]}')
  if not FLAGS.against:
    raise cli.UserError('--against: give the revision to compare with, e.g. --against=a7bfddc')
  kinds = FLAGS.kinds or sorted(f[:-4] for f in os.listdir(os.path.join(CONFIGS, 'models'))
                                if f.endswith('.gin'))
  for kind in kinds:
    if not os.path.isfile(os.path.join(CONFIGS, 'models', f'{kind}.gin')):
      raise cli.UserError(f'--kinds: no configs/models/{kind}.gin')
  with tempfile.TemporaryDirectory() as scratch, checkout(FLAGS.against) as other:
    here = probe(REPO, kinds, os.path.join(scratch, 'tree.npz'))
    there = probe(other, kinds, os.path.join(scratch, 'against.npz'),
                  params=os.path.join(scratch, 'tree.npz'))
  rows = [compare(kind, here, there, FLAGS.atol, FLAGS.rtol) for kind in kinds]
  if FLAGS.json:
    print(json.dumps({'against': FLAGS.against, 'atol': FLAGS.atol, 'rtol': FLAGS.rtol,
                      'kinds': rows}, indent=1))
  else:
    for row in rows:
      if 'error' in row:
        print(f'{row["kind"]:18s} NOT COMPARED: {row["error"]}')
        continue
      print(f'{row["kind"]:18s} {"same" if row["ok"] else "DIFFERENT":9s} max |logit diff| '
            f'{row["max_logit_difference"]:.2e}; loss {row["loss"][0]:.6f} -> '
            f'{row["loss"][1]:.6f}; after one step {row["loss_after_step"][0]:.6f} -> '
            f'{row["loss_after_step"][1]:.6f}')
  if not all(row['ok'] for row in rows):
    sys.exit(1)


if __name__ == '__main__':
  cli.run(main)
