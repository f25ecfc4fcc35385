"""The A/B benchmark's bookkeeping (melodi_jax/bench_lib/ab.py): sides alternate, the speedup is
against / tree per pair, a bad revision is a user error that leaves no worktree behind."""
import subprocess

import pytest

from melodi_jax.bench_lib import ab
from melodi_jax.errors import UserError


def test_sides_alternate_so_drift_hits_both():
  assert ab.run_order(3) == [('against', 'tree'), ('tree', 'against'), ('against', 'tree')]


def test_speedup_is_cpu_seconds_of_against_over_tree():
  pairs = [{'against': {'train': {'cpu_median_s': 3.0}}, 'tree': {'train': {'cpu_median_s': 2.0}}},
           {'against': {'train': {'cpu_median_s': 1.0}}, 'tree': {'train': {'cpu_median_s': 2.0}}}]
  assert ab.speedups(pairs) == [1.5, 0.5]


def _worktrees():
  return subprocess.run(['git', '-C', ab.REPO, 'worktree', 'list'], capture_output=True,
                        text=True).stdout


def test_a_revision_that_is_not_a_commit_is_a_user_error():
  before = _worktrees()
  with pytest.raises(UserError, match='--against=no-such-revision'):
    with ab.checkout('no-such-revision'):
      pass
  assert _worktrees() == before
