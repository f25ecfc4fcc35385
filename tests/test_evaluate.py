"""`python -m melodi_jax.evaluate` on a tiny trained run: reproducible numbers, and on a folder of
user files it counts exactly their bytes."""
import json
import subprocess

import pytest

import test_train_support as support


@pytest.fixture(scope='module')
def trained_run(tmp_path_factory):
  root = tmp_path_factory.mktemp('evaluate')
  workdir, env = root / 'run', support.cli_env(root / 'data')
  command = support.cli_command('train', workdir, '--gin_bindings=TrainConfig.num_steps = 2',
                                '--gin_bindings=TrainConfig.checkpoint_every = 1')
  result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  return root, workdir, env


def _evaluate(workdir, env, *flags):
  result = subprocess.run(support.cli_command('evaluate', workdir, *flags), env=env,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


def test_user_text_files_twice_same_numbers_and_exact_bytes(trained_run):
  root, workdir, env = trained_run
  texts = root / 'my texts'
  texts.mkdir()
  contents = ['short note\n', 'Ünïcode — bytes, not characters: 日本語\n' * 3,
              'x' * 41, 'a longer document ' * 9]
  for i, text in enumerate(contents):
    (texts / f'doc{i}.txt').write_text(text, encoding='utf-8')
  total_bytes = sum(len(text.encode('utf-8')) for text in contents)

  _evaluate(workdir, env, f'--text_dir={texts}')
  path = workdir / 'eval' / 'text_dir_my texts_test_2.json'
  first = json.loads(path.read_text())
  _evaluate(workdir, env, f'--text_dir={texts}', '--step=2')
  second = json.loads(path.read_text())
  assert first == second
  assert first['bytes'] == total_bytes and first['documents'] == len(contents)
  assert first['tokens'] == total_bytes - len(contents)  # bytes vocabulary, no target for byte 0
  for key in ('step', 'tokens', 'bytes', 'nats_per_token', 'perplexity', 'bits_per_byte',
              'segment_length', 'window_length', 'memory_floats_per_lane'):
    assert key in first
  assert first['step'] == 2 and first['complete'] and first['perplexity'] > 1
  # Per-position buckets in the JSON (the default edges): they add up to the totals; the
  # documents are shorter than 256 bytes, so every predicted token is in the first bucket.
  assert [row['label'] for row in first['by_position']][:2] == ['[0, 256)', '[256, 1k)']
  assert first['by_position'][0]['tokens'] == first['tokens']
  assert sum(row['tokens'] for row in first['by_position'][1:]) == 0
  assert first['by_position'][0]['nats'] == pytest.approx(first['tokens'] *
                                                          first['nats_per_token'], rel=1e-6)


def test_an_earlier_step_on_a_task_split(trained_run):
  _, workdir, env = trained_run
  _evaluate(workdir, env, '--step=1', '--split=validation')
  result = json.loads((workdir / 'eval' / 'synthetic_bytes_validation_1.json').read_text())
  assert result['step'] == 1 and result['tokens'] > 0 and result['bits_per_byte'] > 0
