"""How to run several trainings at once on this machine: throughput per process layout.

  python -m melodi_jax.bench_lib.jobs --jobs=2 --steps=80 --layouts=shared,pinned -- \
      --gin_file=experiments/memory_recall/melodi.gin [more trainer flags]

For each layout, starts --jobs copies of the trainer (`python -m melodi_jax.train`, the flags
after `--`) at once in fresh run folders under --root, each for --steps steps with a progress line
every --log_every steps, no evaluation and no checkpoint before the end. A copy's speed is its
tokens/s over the logged intervals after the first (which holds the compile); the layout's figure
is the sum over copies of their medians: tokens/s of the whole machine. Layouts:
  shared  every process sees every core and XLA uses its default threads (what
          launch/experiments/memory_recall.sh does with JOBS=2);
  pinned  copy i runs on core i mod cores (`taskset`), XLA told to use one thread.
Layouts run one after the other (--rounds times, alternating), so compare them in one run.
Thread counts change XLA:CPU's reduction order: a layout is a choice of numerics too (the same
layout on the same machine reproduces a run bit for bit).
"""

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from typing import Sequence

from absl import app
from absl import flags

flags.DEFINE_integer('jobs', 2, 'trainings at once')
flags.DEFINE_integer('steps', 80, 'steps per training')
flags.DEFINE_integer('log_every', 10, 'steps per measured interval')
flags.DEFINE_list('layouts', ['shared', 'pinned'], 'layouts to compare (shared, pinned)')
flags.DEFINE_integer('rounds', 1, 'alternating rounds over the layouts')
flags.DEFINE_string('root', None, 'where the run folders go (default: a temporary folder)')
FLAGS = flags.FLAGS

LAYOUTS = ('shared', 'pinned')
_RATE = re.compile(r'tokens/s ([\d,]+)')
_SINGLE_THREAD = '--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1'


def rates(log_text: str) -> list[float]:
  """tokens/s of every progress line of a train.log, in order."""
  return [float(m.group(1).replace(',', '')) for m in _RATE.finditer(log_text)]


def command(layout: str, copy: int, cores: int, trainer_flags: Sequence[str], workdir: str,
            steps: int, log_every: int) -> tuple[list[str], dict]:
  """(argv, environment) of one copy of the trainer under a layout."""
  if layout not in LAYOUTS:
    raise ValueError(f'--layouts: unknown layout {layout!r}; use {", ".join(LAYOUTS)}')
  argv = [sys.executable, '-m', 'melodi_jax.train', *trainer_flags, f'--workdir={workdir}',
          f'--gin_bindings=TrainConfig.num_steps = {steps}',
          f'--gin_bindings=TrainConfig.log_every = {log_every}',
          '--gin_bindings=TrainConfig.eval_every = 0',
          f'--gin_bindings=TrainConfig.checkpoint_every = {steps}']
  env = dict(os.environ, JAX_PLATFORMS=os.environ.get('JAX_PLATFORMS', 'cpu'))
  if layout == 'pinned':
    argv = ['taskset', '-c', str(copy % cores)] + argv
    env['XLA_FLAGS'] = f'{env.get("XLA_FLAGS", "")} {_SINGLE_THREAD}'.strip()
  return argv, env


def run_layout(layout: str, trainer_flags: Sequence[str], root: str) -> list[float]:
  """The median tokens/s (compile interval dropped) of each copy, run all at once."""
  cores = os.cpu_count() or 1
  procs, logs = [], []
  for copy in range(FLAGS.jobs):
    workdir = os.path.join(root, f'{layout}_{copy}')
    shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(workdir)
    argv, env = command(layout, copy, cores, trainer_flags, workdir, FLAGS.steps,
                        FLAGS.log_every)
    log = open(os.path.join(workdir, 'train.log'), 'w', encoding='utf-8')
    logs.append(log)
    procs.append(subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT))
  medians = []
  for proc, log in zip(procs, logs):
    proc.wait()
    log.close()
    text = open(log.name, encoding='utf-8').read()
    if proc.returncode:
      raise SystemExit(f'error: a {layout} copy failed (exit {proc.returncode}); see {log.name}')
    measured = rates(text)[1:]
    if not measured:
      raise SystemExit(f'error: {log.name} has fewer than two progress lines: raise --steps or '
                       'lower --log_every')
    medians.append(statistics.median(measured))
  return medians


def main(argv: Sequence[str]) -> None:
  trainer_flags = argv[1:]
  if not trainer_flags:
    raise SystemExit('error: pass the trainer flags after --, e.g. -- '
                     '--gin_file=experiments/memory_recall/melodi.gin')
  for layout in FLAGS.layouts:
    if layout not in LAYOUTS:
      raise SystemExit(f'error: --layouts: unknown layout {layout!r}; use {", ".join(LAYOUTS)}')
  root = FLAGS.root or tempfile.mkdtemp(prefix='jobs_layout_')
  totals = {layout: [] for layout in FLAGS.layouts}
  for round_ in range(FLAGS.rounds):
    for layout in FLAGS.layouts:
      medians = run_layout(layout, trainer_flags, root)
      totals[layout].append(sum(medians))
      print(f'round {round_ + 1} {layout}: {" + ".join(f"{m:,.0f}" for m in medians)} = '
            f'{sum(medians):,.0f} tokens/s', flush=True)
  base = statistics.median(totals[FLAGS.layouts[0]])
  for layout, values in totals.items():
    print(f'{layout}: median {statistics.median(values):,.0f} tokens/s over {len(values)} '
          f'round(s), {statistics.median(values) / base:.2f}x {FLAGS.layouts[0]}')


if __name__ == '__main__':
  app.run(main)
