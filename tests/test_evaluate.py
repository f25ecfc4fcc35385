"""`python -m melodi_jax.evaluate` on a tiny trained run: reproducible numbers, and on a folder of
user files it counts exactly their bytes; what train, evaluate and summary print reads clean."""
import json
import os
import re
import subprocess
import sys

import pytest

import test_train_support as support

pytestmark = pytest.mark.slow  # scheduled first (tests/conftest.py)


@pytest.fixture(scope='module')
def trained_run(tmp_path_factory):
  root = tmp_path_factory.mktemp('evaluate')
  workdir, env = root / 'run', support.cli_env(root / 'data')
  env.pop('TF_CPP_MIN_LOG_LEVEL', None)  # as in a fresh shell: the entry points must stay quiet
  command = support.cli_command('train', workdir, '--gin_bindings=TrainConfig.num_steps = 2',
                                '--gin_bindings=TrainConfig.checkpoint_every = 1')
  result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  (root / 'train_output.txt').write_text(result.stdout + result.stderr)
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
  printed = _evaluate(workdir, env, '--step=1', '--split=validation').stdout
  result = json.loads((workdir / 'eval' / 'synthetic_bytes_validation_1.json').read_text())
  assert result['step'] == 1 and result['tokens'] > 0 and result['bits_per_byte'] > 0
  assert printed.count('\n') == 1, printed  # one human line
  assert printed.startswith(f'synthetic_bytes/validation at step 1: {result["bits_per_byte"]:.4f} '
                            'bits/byte'), printed


# What a user reads as a failure: TensorFlow's CUDA probing on a CPU machine, the absl C++
# prelude, tracebacks, error-level lines, and warnings that come from a library, not from us.
_ALARMING = re.compile(r'error|fail|traceback|exception|cuda|cuinit|tensorflow|absl::|^[EF]\d{4} ',
                       re.IGNORECASE)
_OUR_MODULES = {name for _, _, files in os.walk(os.path.join(support.REPO, 'melodi_jax'))
                for name in files if name.endswith('.py')}


def _alarming_lines(text):
  lines = []
  for line in text.splitlines():
    warning = re.match(r'W\d{4} [\d:.]+ +\d+ ([\w.]+):\d+\]', line)
    if _ALARMING.search(line) or (warning and warning.group(1) not in _OUR_MODULES):
      lines.append(line)
  return lines


def test_quickstart_style_output_has_no_line_read_as_an_error(trained_run):
  """The quickstart's commands (train, evaluate, summary) on the tiny run, TF_CPP_MIN_LOG_LEVEL
  unset; evaluate --json prints the result file."""
  root, workdir, env = trained_run
  train = (root / 'train_output.txt').read_text()
  assert 'step 2/2  loss' in train, train[-3000:]
  evaluate = _evaluate(workdir, env, '--split=validation', '--json')
  path = workdir / 'eval' / 'synthetic_bytes_validation_2.json'
  assert json.loads(evaluate.stdout) == json.loads(path.read_text())
  summary = subprocess.run(
      [sys.executable, '-m', 'melodi_jax.summary', f'--workdir={workdir}', '--split=validation'],
      env=env, capture_output=True, text=True, timeout=300)
  assert summary.returncode == 0, summary.stderr[-3000:]
  for text in (train, evaluate.stderr, summary.stdout + summary.stderr):
    assert not _alarming_lines(text), _alarming_lines(text)

  result = json.loads(path.read_text())
  lines = summary.stdout.splitlines()
  assert lines[0] == f'Summary of the run in {workdir}'
  assert 'MELODI: 2 layers, d 32, window 8 tokens' in lines[1]
  assert '2 steps x 8 lanes x 16 tokens = 256 tokens of synthetic_bytes/train' in lines[2]
  assert (f'{result["bits_per_byte"]:.3f} bits/byte on synthetic_bytes/validation at step 2'
          in summary.stdout)
  uniform = re.search(r'(\d+\.\d+) bits/byte: uniform guessing over 256', summary.stdout)
  assert uniform and uniform.group(1) == '8.000', summary.stdout  # log2(256) bits per byte
  unigram = re.search(r'(\d+\.\d+) bits/byte: a unigram model', summary.stdout)
  assert unigram and 3.0 < float(unigram.group(1)) < 8.0, summary.stdout  # text-like bytes
  for needle in (f'{workdir}/checkpoints (steps 1, 2)', f'tensorboard --logdir {workdir}',
                 f'eval/{path.name}', 'python -m melodi_jax.evaluate', '--text_dir=',
                 'python -m melodi_jax.generate'):
    assert needle in summary.stdout, summary.stdout
