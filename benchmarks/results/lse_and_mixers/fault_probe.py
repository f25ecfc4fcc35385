"""The bench with user / system CPU seconds and minor page faults printed per step (stderr).

  PYTHONPATH=. python benchmarks/results/lse_and_mixers/fault_probe.py --gin_file=models/melodi.gin \
      --gin_file=bench/cpu_w256.gin --steps=4 --noeval

Used for item 11's malloc measurements (benchmarks/README.md section 4): KEEP_FREED=1 sets glibc's
malloc to keep freed memory (mallopt: one arena, no mmap'd blocks, no trimming below 2 GiB) before
anything runs; GLIBC_TUNABLES (e.g. glibc.malloc.hugetlb=1:glibc.malloc.mmap_max=0:
glibc.malloc.trim_threshold=68719476736:glibc.malloc.arena_max=1) does the same from the process
start, with transparent huge pages. Run from the repository root.
"""
import ctypes
import os
import resource
import sys

import jax

from melodi_jax import bench
from melodi_jax.train import cli


def _with_rusage(time_steps):
  """bench._time_steps where every step (the warm-up ones first) prints its rusage."""
  def timed(run, state, warmup, steps, probe=None):
    def measured(state):
      before = resource.getrusage(resource.RUSAGE_SELF)
      state = jax.block_until_ready(run(state))
      after = resource.getrusage(resource.RUSAGE_SELF)
      print(f'STEP user {after.ru_utime - before.ru_utime:.3f} '
            f'sys {after.ru_stime - before.ru_stime:.3f} '
            f'minflt {after.ru_minflt - before.ru_minflt}', file=sys.stderr, flush=True)
      return state
    return time_steps(measured, state, warmup, steps, probe)
  return timed


if __name__ == '__main__':
  if os.environ.get('KEEP_FREED') == '1':
    libc = ctypes.CDLL(None)
    # M_ARENA_MAX, M_MMAP_MAX, M_TRIM_THRESHOLD (malloc.h)
    for param, value in ((-8, 1), (-4, 0), (-1, 2**31 - 1)):
      libc.mallopt(param, value)
  bench._time_steps = _with_rusage(bench._time_steps)  # pylint: disable=protected-access
  cli.run(bench.main)
