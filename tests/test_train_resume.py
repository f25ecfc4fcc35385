"""Exact resume through the command line: a run stopped by SIGTERM and restarted from its workdir
computes bit-identical losses to a run that was never stopped (memory and lanes restored).

All three runs are the same command, so the two after the first load its compiled programs from
the session's compilation cache (tests/conftest.py) instead of compiling them again."""
import os
import signal
import subprocess
import time

import pytest

import test_train_support as support

STEPS = 150


def _wait_for_step(path, step, process, timeout=120):
  deadline = time.time() + timeout
  while time.time() < deadline and process.poll() is None:
    if os.path.exists(path):
      with open(path) as f:
        if sum(1 for _ in f) >= step:
          return
    time.sleep(0.02)
  raise AssertionError(f'no step {step} in {path}; exit {process.poll()}')


@pytest.mark.slow
def test_sigterm_then_restart_continues_bit_identically(tmp_path):
  env = support.cli_env(tmp_path / 'data')
  steps = f'--gin_bindings=TrainConfig.num_steps={STEPS}'
  straight_dir = tmp_path / 'straight'
  never_stopped = subprocess.run(support.cli_command('train', straight_dir, steps), env=env,
                                 capture_output=True, text=True, timeout=300)
  assert never_stopped.returncode == 0, never_stopped.stderr[-3000:]
  straight = support.read_losses(straight_dir)
  assert sorted(straight) == list(range(1, STEPS + 1))

  workdir = tmp_path / 'stopped'
  command = support.cli_command('train', workdir, steps)
  with open(tmp_path / 'stopped.log', 'w') as log:
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    _wait_for_step(workdir / 'train_metrics.jsonl', 3, process)
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=120)
  output = (tmp_path / 'stopped.log').read_text()
  assert process.returncode == 0, output[-3000:]
  assert 'stopped by SIGTERM' in output, output[-3000:]
  saved = [int(s) for s in os.listdir(workdir / 'checkpoints') if s.isdigit()]
  assert len(saved) == 1 and 3 <= saved[0] < STEPS, saved

  finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
  assert finished.returncode == 0, finished.stderr[-3000:]
  assert f'resumed from step {saved[0]}' in finished.stderr
  resumed = support.read_losses(workdir)
  assert sorted(resumed) == list(range(1, STEPS + 1))
  assert resumed == straight  # bit-identical, before and after the restart
  assert os.path.isfile(workdir / 'config.gin')
