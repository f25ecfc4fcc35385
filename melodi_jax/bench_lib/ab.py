"""A/B step time: the benchmark of a git revision and of the working tree, alternately, in one run.

On a shared or noisy machine two benchmarks run minutes apart measure the machine as much as the
code; a speed claim is a ratio measured in pairs. Each pair runs `python -m melodi_jax.bench
--json` once in a checkout of --against (a temporary git worktree) and once in this tree, in
alternating order (A B, B A, A B, ...) so that a drift in load hits both sides alike, and compares
the CPU-seconds per train step (the median over the bench's timed steps; CPU time, unlike wall
time, does not count the time other processes hold the cores).

  python -m melodi_jax.bench_lib.ab --against=a7bfddc --pairs=3 -- \\
      --gin_file=models/melodi.gin --gin_file=bench/cpu_w256.gin --steps=10 --noeval

Everything after `--` goes to both benchmarks. Prints one line a side a pair and, last, the median
over the pairs of speedup = CPU-s per step of --against / CPU-s per step of this tree (> 1: this
tree is faster); --json prints all of it as JSON.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from typing import Sequence

from absl import flags

from melodi_jax.bench_lib import worktree
from melodi_jax.bench_lib.worktree import REPO, checkout
from melodi_jax.train import cli

worktree.define_against_flag()
flags.DEFINE_integer('pairs', 3, 'alternating pairs of benchmark runs (>= 1)')
cli.define_json_flag()

def run_order(pairs: int) -> list[tuple[str, str]]:
  """The sides of each pair in the order they run: A B, B A, A B, ..."""
  return [('against', 'tree') if i % 2 == 0 else ('tree', 'against') for i in range(pairs)]


def speedups(results: list[dict]) -> list[float]:
  """Per pair: CPU-s per train step of --against / that of this tree."""
  return [r['against']['train']['cpu_median_s'] / r['tree']['train']['cpu_median_s']
          for r in results]


def bench(tree: str, bench_args: Sequence[str]) -> dict:
  """One `python -m melodi_jax.bench --json` in `tree` (this interpreter, that tree's code)."""
  env = dict(os.environ, PYTHONPATH=tree)
  result = subprocess.run([sys.executable, '-m', 'melodi_jax.bench', *bench_args, '--json'],
                          cwd=tree, env=env, capture_output=True, text=True)
  if result.returncode != 0:
    tail = '\n'.join(result.stderr.strip().splitlines()[-5:])
    raise cli.UserError(f'the benchmark failed in {tree} (exit {result.returncode}); its '
                        f'last lines:\n{tail}')
  found = json.loads(result.stdout[result.stdout.index('{'):])
  if 'train' not in found or 'cpu_median_s' not in found['train']:
    raise cli.UserError('the bench arguments after -- must time train steps (--steps >= 1, '
                        'no --sweep_windows)')
  return found


def _line(pair: int, side: str, result: dict) -> str:
  train = result['train']
  return (f'pair {pair + 1} {side:7s}: {1e3 * train["cpu_median_s"]:8.1f} CPU-ms/step, '
          f'{1e3 * train["median_s"]:8.1f} ms/step wall, {train["tokens_per_s"]:10,.0f} tokens/s')


def main(argv: Sequence[str]) -> None:
  FLAGS = flags.FLAGS
  if not FLAGS.against:
    raise cli.UserError('--against: give the revision to compare with, e.g. --against=a7bfddc')
  if FLAGS.pairs < 1:
    raise cli.UserError(f'--pairs={FLAGS.pairs}: give at least 1 pair')
  bench_args = list(argv[1:])
  if not any(a.startswith('--gin_file') for a in bench_args):
    raise cli.UserError('give the benchmark arguments after --, e.g. -- '
                        '--gin_file=models/melodi.gin --gin_file=bench/cpu_w256.gin')
  results = []
  with checkout(FLAGS.against) as other:
    trees = {'against': other, 'tree': REPO}
    for pair, order in enumerate(run_order(FLAGS.pairs)):
      results.append({})
      for side in order:
        results[-1][side] = bench(trees[side], bench_args)
        if not FLAGS.json:
          print(_line(pair, 'against' if side == 'against' else 'tree', results[-1][side]),
                flush=True)
  ratios = speedups(results)
  if FLAGS.json:
    print(json.dumps({'against': FLAGS.against, 'bench_args': bench_args, 'pairs': results,
                      'speedups': ratios, 'median_speedup': statistics.median(ratios)},
                     indent=1))
    return
  print('speedup per pair (CPU-s per step of --against / of this tree): ' +
        ', '.join(f'{r:.3f}' for r in ratios))
  print(f'median speedup over {len(ratios)} pairs: {statistics.median(ratios):.3f}x')


if __name__ == '__main__':
  cli.run(main)
