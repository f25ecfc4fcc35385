"""The A/B benchmark's bookkeeping (melodi_jax/bench_lib/ab.py): sides alternate, the speedup is
against / tree per pair, a bad revision is a user error that leaves no worktree behind; and the
numerics check (bench_lib/numerics.py) tells float noise from a change."""
import subprocess

import numpy as np
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


def _side(logits, loss, after):
  return {'melodi/logits': np.asarray(logits, np.float32), 'melodi/loss': np.asarray(loss),
          'melodi/loss_after_step': np.asarray(after)}


def test_numerics_compare_passes_float_noise_and_flags_a_change():
  """numerics.py: same within tolerance -> ok; a changed logit or loss -> not ok; a side that
  could not build the model is reported, not compared."""
  from melodi_jax.bench_lib import numerics
  tree = _side([[1.0, 2.0]], 3.0, 2.5)
  row = numerics.compare('melodi', tree, _side([[1.0, 2.0 + 2e-6]], 3.0 + 1e-6, 2.5), 1e-4, 1e-4)
  assert row['ok'] and row['max_logit_difference'] == pytest.approx(2e-6, rel=0.1)
  assert not numerics.compare('melodi', tree, _side([[1.0, 2.01]], 3.0, 2.5), 1e-4, 1e-4)['ok']
  assert not numerics.compare('melodi', tree, _side([[1.0, 2.0]], 3.0, 2.51), 1e-4, 1e-4)['ok']
  broken = {'melodi/error': np.asarray('KeyError: parameter paths differ')}
  row = numerics.compare('melodi', tree, broken, 1e-4, 1e-4)
  assert not row['ok'] and 'parameter paths differ' in row['error']


def test_numerics_probe_refuses_parameters_of_another_shape():
  """The probe only reuses the asking tree's weights when every parameter path matches."""
  from melodi_jax.bench_lib import numerics_probe
  params = {'layer': {'kernel': np.ones((2, 2))}}
  assert numerics_probe._unflatten_like(params, {'layer/kernel': np.zeros((2, 2))})['layer'][
      'kernel'].sum() == 0
  with pytest.raises(KeyError, match='parameter paths differ'):
    numerics_probe._unflatten_like(params, {'layer/bias': np.zeros(2)})
