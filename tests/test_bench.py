"""bench.py: a tiny end-to-end run of the CLI, and its user errors."""

import json
import os
import subprocess
import sys

from melodi_jax.bench_lib import flops

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The tiny config cut to one layer (short- and long-term memory both in it) so that compiling
# the train and eval steps stays short.
SMALLEST = ['--gin_file=models/melodi.gin', '--gin_file=sizes/tiny.gin',
            '--gin_bindings=ModelConfig.num_layers = 1',
            '--gin_bindings=MelodiStack.long_term_layers = (0,)']


def _run(*args, timeout=300):
  return subprocess.run([sys.executable, '-m', 'melodi_jax.bench', *args], cwd=REPO,
                        capture_output=True, text=True, timeout=timeout,
                        env=dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS=''))


def test_smoke_three_steps():
  proc = _run(*SMALLEST, '--steps=3', '--warmup=1', '--segment_length=16', '--batch_size=2',
              '--roofline_size=128', '--json')
  assert proc.returncode == 0, proc.stderr[-2000:]
  result = json.loads(proc.stdout)
  assert result['num_windows'] == 2 and result['train']['steps'] == 3
  for kind in ('train', 'eval'):
    r = result[kind]
    assert r['median_s'] > 0 and r['tokens_per_s'] > 0 and r['compile_s'] > 0
    assert r['matmul_flops'] > 0 and 0 < r['roofline_fraction']
    assert r['cpu_median_s'] > 0 and 0 < r['cpu_roofline_fraction']
  # The scan-aware count is more than XLA's, which counts the window loop's body once.
  assert result['train']['matmul_flops'] > result['train']['xla_cost_analysis_flops'] / 2
  assert result['peak_rss_bytes'] > 0


def test_compile_only_sweep():
  proc = _run(*SMALLEST, '--sweep_windows=2,4', '--steps=0', '--batch_size=2',
              '--roofline_size=128', '--json')
  assert proc.returncode == 0, proc.stderr[-2000:]
  rows = json.loads(proc.stdout)['sweep']
  assert [r['num_windows'] for r in rows] == [2, 4]
  for r in rows:
    assert r['compile_s'] > 0 and r['temp_bytes'] > 0 and r['median_s'] is None


def test_flops_count_every_scan_iteration():
  import jax
  import jax.numpy as jnp
  def f(x, w):
    return jax.lax.scan(lambda c, _: (c @ w, None), x, None, length=5)[0]
  x = jnp.ones((4, 8))
  w = jnp.ones((8, 8))
  assert flops.matmul_flops(f, x, w) == 5 * 2 * 4 * 8 * 8


def test_user_errors_are_one_line_and_exit_2():
  for args, flag in [(['--gin_file=models/no_such.gin'], '--gin_file'),
                     ([], '--gin_file'),
                     (['--gin_file=models/melodi.gin', '--gin_file=sizes/tiny.gin',
                       '--segment_length=12'], '--segment_length')]:
    proc = _run(*args)
    lines = [line for line in proc.stderr.splitlines() if line.strip() and 'tpu' not in line]
    assert proc.returncode == 2 and len(lines) == 1 and flag in lines[0], proc.stderr
