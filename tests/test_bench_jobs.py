"""bench_lib.jobs: reads the trainer's progress lines and builds each layout's command."""
import pytest

from melodi_jax.bench_lib import jobs


def test_rates_read_every_progress_line():
  log = ('I1204 metrics.py:76] step 10/80  loss 4.1  bits/byte 5.9  tokens/s 3,971  elapsed 0:00:12\n'
         'I1204 metrics.py:83] eval ... tokens 1344.0000\n'
         'I1204 metrics.py:76] step 20/80  loss 4.0  bits/byte 5.8  tokens/s 12,345  elapsed 0:00:15\n')
  assert jobs.rates(log) == [3971.0, 12345.0]


def test_pinned_copies_go_to_their_own_core_with_one_xla_thread():
  argv, env = jobs.command('pinned', 3, 2, ['--gin_file=a.gin'], '/w', 80, 10)
  assert argv[:3] == ['taskset', '-c', '1'] and '--gin_file=a.gin' in argv
  assert 'intra_op_parallelism_threads=1' in env['XLA_FLAGS']
  assert '--gin_bindings=TrainConfig.num_steps = 80' in argv and '--workdir=/w' in argv
  argv, env = jobs.command('shared', 0, 2, [], '/w', 80, 10)
  assert argv[0] != 'taskset' and 'intra_op_parallelism_threads=1' not in env.get('XLA_FLAGS', '')
  with pytest.raises(ValueError, match='unknown layout'):
    jobs.command('spread', 0, 2, [], '/w', 80, 10)
