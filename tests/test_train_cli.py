"""User mistakes at the command line end with one line that says what to fix, and exit 2."""
import os
import subprocess

import pytest

import test_train_support as support


def _run(command, env):
  return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def _assert_one_line_error(result, *needles):
  assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
  errors = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
  assert len(errors) == 1, result.stderr[-3000:]
  assert 'Traceback' not in result.stderr, result.stderr[-3000:]
  for needle in needles:
    assert needle in errors[0], errors[0]


@pytest.mark.parametrize('flags, needles', [
    (['--gin_bindings=TrainConfig.num_stepz = 3'], ['num_stepz']),
    (['--gin_file=sizes/no_such_size.gin'], ['no_such_size.gin', 'not found']),
    (['--no_such_flag=1'], ['no_such_flag']),
    (["--gin_bindings=TrainConfig.task = 'books_bytes'"], ['books']),
    (['--gin_bindings=TrainConfig.segment_length = 12'], ['12']),
], ids=['gin_typo', 'missing_gin_file', 'bad_flag', 'missing_corpus', 'window_not_dividing'])
def test_user_mistakes_exit_2_with_one_line(tmp_path, flags, needles):
  workdir = tmp_path / 'run'
  result = _run(support.cli_command('train', workdir, *flags), support.cli_env(tmp_path / 'data'))
  _assert_one_line_error(result, *needles)
  assert not workdir.exists(), 'nothing may be written for a user mistake'


def test_unwritable_workdir_exits_2(tmp_path):
  readonly = '/proc/melodi_jax_run'  # no one, root included, can create files there
  result = _run(support.cli_command('train', readonly), support.cli_env(tmp_path / 'data'))
  _assert_one_line_error(result, 'not writable')


def test_evaluate_without_a_run_exits_2(tmp_path):
  result = _run(support.cli_command('evaluate', tmp_path / 'empty'),
                support.cli_env(tmp_path / 'data'))
  _assert_one_line_error(result, 'config.gin')
