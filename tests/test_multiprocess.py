"""The multi-host path, run: launch/multiprocess_local.sh starts 2 processes x 2 fake CPU devices
joined by jax.distributed (SLURM variables, gloo collectives), and they must compute what one
process with 4 devices computes: the same losses, parameters, checkpoints and eval numbers.

Slow next to the rest of the suite (every launch is two JAX start-ups and compiles), so the
scenarios share launches and the model is a one-layer Transformer-XL (memory carried across
segments, the cheapest to compile). Those tests are marked: select with `-m multiprocess`, skip
with `-m "not multiprocess"`. The first test here needs no second process.
"""
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from melodi_jax import data, models  # pylint: disable=unused-import  (gin configurables)
from melodi_jax.train import checkpoints, cli, config, inputs, optim, trainer

pytestmark = pytest.mark.slow  # scheduled first (tests/conftest.py)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCHER = os.path.join(REPO, 'launch', 'multiprocess_local.sh')
GIN_FILES = ['models/transformer_xl.gin', 'sizes/tiny.gin', 'runtime/cpu.gin']
BINDINGS = [
    'ModelConfig.num_layers = 1', 'TrainConfig.segment_length = 16',
    'TrainConfig.batch_size = 8', 'TrainConfig.mesh_shape = (4, 1)', 'TrainConfig.log_every = 1',
    'TrainConfig.checkpoint_every = 2', 'TrainConfig.keep_checkpoints = 50',
    'TrainConfig.eval_every = 0', 'TrainConfig.eval_max_batches = None',
    'OptimizerConfig.warmup_steps = 2', 'OptimizerConfig.decay_steps = 100']
# Seconds a launch may take; a hang fails the test instead of blocking CI. A machine busy
# with other work may need more: MELODI_MULTIPROCESS_TIMEOUT.
LAUNCH_TIMEOUT = int(os.environ.get('MELODI_MULTIPROCESS_TIMEOUT', '240'))
HEARTBEAT = 10        # --heartbeat_timeout_seconds of the launches
REFERENCE_STEPS = 20  # the 1-process run the others are held against


# ------------------------------------------------------------------------------------ helpers
def _train_in_process(workdir, *bindings):
  """1 process x 4 of the 8 fake devices, the same gin config as the launches."""
  cli.parse_gin(GIN_FILES, BINDINGS + list(bindings))
  try:
    train_config = config.TrainConfig()
    trainer.train(train_config, str(workdir), optimizer_config=optim.OptimizerConfig(),
                  model=models.build_from_gin(segment_length=train_config.segment_length))
  finally:
    import gin  # pylint: disable=g-import-not-at-top
    gin.clear_config()
  return _losses(workdir)


def _launch(workdir, log_path, *bindings, flags=(), module='train'):
  """Starts the launcher (its own process group, killed by `_stopped`); `evaluate` reads the
  run's config.gin, so it gets no gin flags."""
  env = dict(os.environ, MELODI_PYTHON=sys.executable, PROCESSES='2', DEVICES_PER_PROCESS='2')
  env['PYTHONPATH'] = os.pathsep.join([REPO] + [p for p in [env.get('PYTHONPATH')] if p])
  gin_flags = ([f'--gin_file={f}' for f in GIN_FILES] +
               [f'--gin_bindings={b}' for b in BINDINGS + list(bindings)])
  command = (['bash', LAUNCHER, module, str(workdir)] + (gin_flags if module == 'train' else []) +
             [f'--heartbeat_timeout_seconds={HEARTBEAT}'] + list(flags))
  log = open(log_path, 'w')  # pylint: disable=consider-using-with
  process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)
  process.log, process.log_path = log, log_path
  return process


@contextlib.contextmanager
def _stopped(process):
  """Kills the launcher's whole process group on the way out, whatever happened."""
  try:
    yield process
  finally:
    with contextlib.suppress(ProcessLookupError):
      os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    process.log.close()


def _finish(process, timeout=LAUNCH_TIMEOUT) -> str:
  try:
    process.wait(timeout=timeout)
  except subprocess.TimeoutExpired:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    raise AssertionError(f'the launch hung for {timeout}s:\n{_tail(process)}') from None
  return _output(process)


def _output(process) -> str:
  process.log.flush()
  with open(process.log_path, encoding='utf-8') as f:
    return f.read()


def _tail(process, lines=40) -> str:
  return '\n'.join(_output(process).splitlines()[-lines:])


def _wait_for_step(workdir, step, process, timeout=LAUNCH_TIMEOUT):
  path = os.path.join(workdir, 'train_metrics.jsonl')
  deadline = time.time() + timeout
  while time.time() < deadline and process.poll() is None:
    if os.path.exists(path) and max(_losses(workdir), default=0) >= step:
      return
    time.sleep(0.1)
  raise AssertionError(f'no step {step} in {path} (launcher status {process.poll()}):\n'
                       f'{_tail(process)}')


def _pid(workdir, index) -> int:
  with open(os.path.join(workdir, 'logs', f'process_{index}.pid'), encoding='utf-8') as f:
    return int(f.read())


def _losses(workdir) -> dict[int, float]:
  losses = {}
  with contextlib.suppress(FileNotFoundError):
    with open(os.path.join(workdir, 'train_metrics.jsonl'), encoding='utf-8') as f:
      for line in f:
        if line.strip():
          row = json.loads(line)
          losses[row['step']] = row['loss']
  return losses


def _params(workdir, step) -> dict[str, np.ndarray]:
  """The parameters of checkpoint `step`, read onto one device whatever mesh wrote them."""
  checkpointer = checkpoints.Checkpointer(str(workdir), read_only=True)
  try:
    metadata = checkpointer.manager.item_metadata(step)['params']
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                            metadata)
    restored = checkpointer.restore({'params': abstract}, step=step)
  finally:
    checkpointer.close()
  return {jax.tree_util.keystr(path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_leaves_with_path(restored.params)}


def _progress(workdir, step) -> dict:
  with open(os.path.join(workdir, 'checkpoints', str(step), 'progress', 'metadata'),
            encoding='utf-8') as f:
    return json.load(f)


def _copy_checkpoint(source, step, workdir):
  os.makedirs(os.path.join(workdir, 'checkpoints'))
  shutil.copytree(os.path.join(source, 'checkpoints', str(step)),
                  os.path.join(workdir, 'checkpoints', str(step)))


def _assert_close_losses(got, want, steps, what):
  for step in steps:
    assert step in got and step in want, (what, step, sorted(got), sorted(want))
    np.testing.assert_allclose(got[step], want[step], rtol=2e-5, err_msg=f'{what}: step {step}')


def _assert_close_params(got, want, what):
  assert got.keys() == want.keys(), what
  for name in want:
    np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-5,
                               err_msg=f'{what}: {name}')


def _names_a_dead_process(output: str) -> bool:
  """The errors a process stops with when another died: jax.distributed's (missed heartbeats)
  or the entry point's after a collective failed (the peer's connection closed)."""
  return any(message in output for message in (
      'another task died', 'tasks are unhealthy', 'error: process 0 of 2 stops'))


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
  monkeypatch.setenv('MELODI_DATA_DIR', str(tmp_path / 'data'))
  return tmp_path / 'data'


# -------------------------------------------------------------------------------------- tests
def test_process_lanes_split_the_lanes_of_one_process(monkeypatch):
  """P processes each keep their rows of the global lanes: disjoint, together exactly the
  batches of one process, with the same (global) lane state everywhere."""
  import test_train_support as support  # pylint: disable=g-import-not-at-top
  spec = inputs.StreamSpec(task='synthetic_bytes', split='train', batch_size=8,
                           segment_length=16, window_length=8, train=True)
  one = inputs.open_stream(spec, support.synthetic_factory)
  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  processes = []
  for index, rows in ((0, None), (1, None), (0, np.array([1, 3, 5, 7]))):
    monkeypatch.setattr(jax, 'process_index', lambda index=index: index)
    processes.append(inputs.open_stream(spec, support.synthetic_factory) if rows is None else
                     inputs.ProcessLanes(support.synthetic_factory('', '', **_lane_kwargs(spec)),
                                         rows))
  for _ in range(3):
    whole = next(one)
    parts = [next(p) for p in processes]
    for key in inputs.BATCH_KEYS:
      np.testing.assert_array_equal(np.concatenate([parts[0][key], parts[1][key]]), whole[key])
      np.testing.assert_array_equal(parts[2][key], whole[key][1::2])
    assert all(p.state() == one.state() for p in processes)
  # A lane state restores into a process of any count.
  processes[1].restore(one.state())
  np.testing.assert_array_equal(next(processes[1])['inputs'], next(one)['inputs'][4:])


def _lane_kwargs(spec):
  return dict(batch_size=spec.batch_size, segment_length=spec.segment_length,
              window_length=spec.window_length, train=spec.train, seed=spec.seed)


@pytest.mark.multiprocess
def test_two_processes_compute_what_one_process_computes(tmp_path, data_dir):
  """2 x 2 devices == 1 x 4 devices: losses, parameters, eval numbers; the lanes split between
  the processes; checkpoints move between process counts both ways; SIGTERM to one process
  stops both at one step, whose checkpoint resumes exactly; a killed process stops the other.

  One test, three launches: each launch costs two JAX start-ups and compiles."""
  del data_dir
  one = tmp_path / 'one_process'
  # A checkpoint every step: the 2-process runs are held against the step they stop at.
  reference = _train_in_process(one, f'TrainConfig.num_steps = {REFERENCE_STEPS}',
                                'TrainConfig.checkpoint_every = 1')
  # Its evaluation at step 4, from a 4-step run (every evaluation reads the whole validation
  # split: the long run has none; the short one reuses its compiled steps).
  evaluated = tmp_path / 'one_process_4_steps'
  assert _train_in_process(evaluated, 'TrainConfig.num_steps = 4', 'TrainConfig.eval_every = 4'
                           ) == {step: reference[step] for step in range(1, 5)}

  # ---- From scratch: the same losses and parameters as one process, until SIGTERM to one of
  # them: both save the step they agree on and exit 0. No other checkpoint: none is due before
  # step 1000.
  two = tmp_path / 'two_processes'
  bindings = ('TrainConfig.num_steps = 1000', 'TrainConfig.checkpoint_every = 1000')
  with _stopped(_launch(two, tmp_path / 'two.log', *bindings)) as process:
    _wait_for_step(two, 3, process)
    os.kill(_pid(two, 1), signal.SIGTERM)
    output = _finish(process)
  assert process.returncode == 0, output[-5000:]
  stops = {line[:4]: line.rsplit('after step ', 1)[1].split(';')[0]
           for line in output.splitlines()
           if 'stopped by a preemption notice after step' in line}
  assert set(stops) == {'[p0]', '[p1]'} and len(set(stops.values())) == 1, (stops,
                                                                           output[-5000:])
  stop_step = int(stops['[p0]'])
  if stop_step + 2 > REFERENCE_STEPS:
    # A busy machine: the stop landed late. The reference continues from its own last
    # checkpoint (its schedule does not depend on num_steps: decay_steps is fixed), which equals
    # training it uninterrupted (tests/test_train_resume.py checks resumes bit for bit).
    reference = _train_in_process(one, f'TrainConfig.num_steps = {stop_step + 2}',
                                  'TrainConfig.checkpoint_every = 1')
  assert set(reference) >= set(range(1, stop_step + 3)), (stop_step, sorted(reference))
  assert max(_losses(two)) == stop_step
  _assert_close_losses(_losses(two), reference, range(1, stop_step + 1),
                       '2 processes from scratch')
  _assert_close_params(_params(two, stop_step), _params(one, stop_step),
                       '2 processes from scratch')

  # Each process reads disjoint lanes, together the lanes of one process (the losses above are
  # means over all of them), and both hold the same global lane state, saved once.
  assert 'process 0/2 reads lanes [0, 4) of 8 (synthetic_bytes/train)' in output, output[-5000:]
  assert 'process 1/2 reads lanes [4, 8) of 8 (synthetic_bytes/train)' in output
  assert _progress(two, stop_step)['lane_state'] == _progress(one, stop_step)['lane_state']
  # orbax wrote one checkpoint, at the agreed step (no per-process copies, nothing left
  # half-written).
  assert sorted(os.listdir(two / 'checkpoints')) == [str(stop_step)]

  # ---- The checkpoint the 2 processes saved at SIGTERM continues in 1 process exactly as the
  # 1-process run did.
  resumed = tmp_path / 'two_then_one'
  _copy_checkpoint(two, stop_step, resumed)
  _assert_close_losses(_train_in_process(resumed, f'TrainConfig.num_steps = {stop_step + 2}'),
                       reference, (stop_step + 1, stop_step + 2),
                       '2-process checkpoint resumed in 1 process')
  _assert_close_params(_params(resumed, stop_step + 2), _params(one, stop_step + 2),
                       '2-process checkpoint resumed in 1 process')

  # ---- One written by 1 process continues in 2 as the 1 process did, evaluating at step 4;
  # then one process is killed outright, and the other stops with an error instead of waiting
  # for it.
  run = tmp_path / 'one_then_two'
  _copy_checkpoint(one, 2, run)
  with _stopped(_launch(run, tmp_path / 'killed.log', *bindings,
                        'TrainConfig.eval_every = 4')) as process:
    _wait_for_step(run, 5, process)  # (the evaluation at step 4 is written before step 5)
    assert 'resumed from step 2' in _output(process), _tail(process)
    os.kill(_pid(run, 1), signal.SIGKILL)
    killed = time.time()
    output = _finish(process, timeout=HEARTBEAT + 90)
    waited = time.time() - killed
  _assert_close_losses(_losses(run), reference, (3, 4, 5),
                       '1-process checkpoint resumed in 2 processes')
  assert process.returncode != 0, output[-5000:]
  assert 'process 1 exited with status 137' in output, output[-5000:]
  p0 = '\n'.join(line for line in output.splitlines() if line.startswith('[p0]'))
  assert _names_a_dead_process(p0), p0[-5000:]
  assert 'process 0 exited with status' in output, output[-5000:]
  assert waited < HEARTBEAT + 90, waited

  # The evaluation protocol under 2 processes gives the numbers of 1 process: in training (step
  # 4 above), and through `python -m melodi_jax.evaluate --multiprocess` on the 4-step
  # 1-process run's checkpoint (written over that run's own result).
  name = 'synthetic_bytes_validation_4.json'
  with open(evaluated / 'eval' / name, encoding='utf-8') as f:
    want = json.load(f)
  assert want['complete'] and want['documents'] > 0
  for evaluation in ('train', 'evaluate'):
    workdir = run
    if evaluation == 'evaluate':
      workdir = evaluated
      os.remove(evaluated / 'eval' / name)
      with _stopped(_launch(evaluated, tmp_path / 'evaluate.log', module='evaluate',
                            flags=['--split=validation'])) as process:
        output = _finish(process)
      assert process.returncode == 0, output[-5000:]
    with open(workdir / 'eval' / name, encoding='utf-8') as f:
      got = json.load(f)
    for key in ('tokens', 'bytes', 'documents', 'batches', 'complete'):
      assert got[key] == want[key], (evaluation, key, got[key], want[key])
    for key in ('nats_per_token', 'bits_per_byte'):
      np.testing.assert_allclose(got[key], want[key], rtol=2e-5, err_msg=(evaluation, key))


def _spawn_probe(tmp_path, *flags, processes=2):
  """Starts tests/multiprocess_probe.py in `processes` processes with the variables the
  launcher sets (SLURM's, a free coordinator port); returns (Popen, log path) per process."""
  with socket.socket() as s:
    s.bind(('localhost', 0))
    port = s.getsockname()[1]
  spawned = []
  for index in range(processes):
    env = dict(os.environ, SLURM_JOB_ID=str(port), SLURM_STEP_NODELIST='localhost',
               SLURM_STEP_NUM_NODES='1', SLURM_NTASKS=str(processes), SLURM_PROCID=str(index),
               SLURM_LOCALID=str(index), JAX_COORDINATOR_PORT=str(port), JAX_PLATFORMS='cpu',
               JAX_CPU_COLLECTIVES_IMPLEMENTATION='gloo',
               XLA_FLAGS='--xla_force_host_platform_device_count=2')
    env['PYTHONPATH'] = os.pathsep.join([REPO] + [p for p in [env.get('PYTHONPATH')] if p])
    log_path = tmp_path / f'probe_{index}.log'
    with open(log_path, 'w') as log:
      spawned.append((subprocess.Popen(
          [sys.executable, '-u', os.path.join(REPO, 'tests', 'multiprocess_probe.py'),
           '--multiprocess'] + list(flags), env=env, stdout=log, stderr=subprocess.STDOUT,
          start_new_session=True), log_path))
  return spawned


def _finish_probes(spawned, timeout) -> list[str]:
  """Waits for every probe (killing all at `timeout`); returns their outputs."""
  deadline = time.time() + timeout
  try:
    for process, _ in spawned:
      process.wait(timeout=max(deadline - time.time(), 0.1))
  except subprocess.TimeoutExpired:
    pass
  hung = [i for i, (process, _) in enumerate(spawned) if process.poll() is None]
  for process, _ in spawned:
    with contextlib.suppress(ProcessLookupError):
      os.killpg(process.pid, signal.SIGKILL)
    process.wait()
  outputs = [log_path.read_text() for _, log_path in spawned]
  assert not hung, f'processes {hung} hung for {timeout}s:\n' + '\n'.join(
      f'--- process {i}:\n' + '\n'.join(out.splitlines()[-15:]) for i, out in enumerate(outputs))
  return outputs


@pytest.mark.multiprocess
def test_processes_connect_before_a_slow_first_computation(tmp_path):
  """CPU collectives give up when a process reaches its first cross-process computation 30 s
  after another (here process 0 waits 35 s, as a slow compile would): the entry points connect
  every process when they join, so a later first computation still works."""
  outputs = _finish_probes(_spawn_probe(tmp_path, '--delay=35'), timeout=150)
  for index, output in enumerate(outputs):
    assert 'round 2: 3 6' in output, f'process {index}:\n{output[-3000:]}'


@pytest.mark.multiprocess
def test_a_failing_process_stops_the_others(tmp_path):
  """An exception in one process ends it at once (not after the 5-minute shutdown barrier),
  so the others, waiting in a collective, stop within the heartbeat timeout instead of
  hanging."""
  spawned = _spawn_probe(tmp_path, '--fail', '--rounds=100000', '--heartbeat_timeout_seconds=5')
  started = time.time()
  outputs = _finish_probes(spawned, timeout=120)  # the shutdown barrier waits 300 s
  assert time.time() - started < 120
  assert 'RuntimeError: planted failure in process 1' in outputs[1], outputs[1][-3000:]
  assert spawned[1][0].returncode == 1, (spawned[1][0].returncode, outputs[1][-3000:])
  assert spawned[0][0].returncode != 0, outputs[0][-3000:]
  assert _names_a_dead_process(outputs[0]), outputs[0][-3000:]
