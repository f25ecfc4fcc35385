"""The command line of every entry point (train, evaluate, generate, summary, footprint, bench,
the experiments): flags, gin files and bindings, a run's operative config, and `run`, where a
mistake a user can fix (`UserError`) is one line on stderr and exit status 2.
"""
from __future__ import annotations

import os
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence

from absl import app, flags
from absl import logging as absl_logging

from melodi_jax import gin_config
from melodi_jax.errors import UserError, exit_on_user_error  # UserError: re-exported
from melodi_jax.train import quiet


def define_gin_flags():
  """--gin_file, --gin_bindings (alias --gin_param), --gin_search_paths; defined once, so that
  several entry points can be imported in one process (tests)."""
  if 'gin_file' in flags.FLAGS:
    return
  flags.DEFINE_multi_string('gin_file', [], 'Gin file to parse; repeatable. Looked up as given, '
                            'then in --gin_search_paths.')
  flags.DEFINE_multi_string('gin_bindings', [], 'Gin binding, e.g. "TrainConfig.num_steps = 10"; '
                            'repeatable; applied after the files.')
  flags.DEFINE_alias('gin_param', 'gin_bindings')
  flags.DEFINE_list('gin_search_paths', ['configs'], 'Folders where --gin_file names and gin '
                    '`include`s are looked up (the package configs/ is always searched last).')


def define_json_flag():
  """--json (footprint, bench); defined once."""
  if 'json' not in flags.FLAGS:
    flags.DEFINE_bool('json', False, 'print JSON instead of text')


def define_common_flags():
  """The gin flags and a run's: --workdir, --tfds_data_dir, --multiprocess."""
  define_gin_flags()
  flags.DEFINE_string('workdir', None, 'Run folder: checkpoints, metrics, operative gin config.')
  flags.DEFINE_string('tfds_data_dir', None, 'TFDS data dir for corpora prepared with tfds '
                      '(e.g. PG-19).')
  flags.DEFINE_bool('multiprocess', False, 'Call jax.distributed.initialize() first (TPU pods, '
                    'SLURM jobs; launch/multiprocess_local.sh on one machine).')
  flags.DEFINE_integer('heartbeat_timeout_seconds', 100, 'With --multiprocess: a process that '
                       'sent no heartbeat for this long counts as dead, and every other process '
                       'stops with an error (jax.distributed; its default is 100).')


def initialize_distributed(multiprocess: bool, heartbeat_timeout_seconds: int = 100):
  """--multiprocess: joins the other processes (TPU pod, SLURM, ...) before any other JAX call."""
  if not multiprocess:
    return
  if heartbeat_timeout_seconds <= 0:
    raise UserError(f'--heartbeat_timeout_seconds={heartbeat_timeout_seconds} must be positive')
  import jax  # pylint: disable=g-import-not-at-top
  try:
    jax.distributed.initialize(heartbeat_timeout_seconds=heartbeat_timeout_seconds)
  except (ValueError, RuntimeError) as e:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise UserError(f'--multiprocess: jax.distributed.initialize() failed ({first}); run it on '
                    'every worker of a TPU pod or a SLURM job (srun), use '
                    'launch/multiprocess_local.sh on one machine, or drop --multiprocess') from None
  _connect_collectives()


def _connect_collectives():
  """Runs, in lockstep, the first cross-process computations over the device groups the
  trainer uses: all devices (a data-parallel step) and one device per process (host
  all-gathers, orbax's barriers).

  CPU collectives (gloo) connect a device group at its first computation and fail when one
  process gets there 30 s after another, which a slower compile of the first train step is
  enough for. Later computations reuse the connection whatever the skew. (A mesh whose model
  axis spans processes adds groups connected at the first step, unguarded.)
  """
  import jax  # pylint: disable=g-import-not-at-top
  from jax._src import distributed  # pylint: disable=g-import-not-at-top  (orbax uses it too)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ('devices',))
  ones = jax.make_array_from_process_local_data(
      jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('devices')),
      np.ones([jax.local_device_count()], np.int32))
  count = jax.jit(jnp.sum, out_shardings=jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec())).lower(ones).compile()
  # Compiled everywhere: meet (the coordination service, no collective), then run at once.
  distributed.global_state.client.wait_at_barrier('melodi_jax_connect', 10 * 60 * 1000)
  assert int(count(ones)) == jax.device_count(), 'processes disagree on the device count'
  multihost_utils.sync_global_devices('melodi_jax: every process connected')


def register_configurables():
  """Imports every module that defines gin configurables used by run configs (the model's stack
  plans, the data tasks', TrainConfig, OptimizerConfig), so that a file binding any of them
  parses whichever modules the caller imported before."""
  # pylint: disable=g-import-not-at-top,unused-import
  from melodi_jax import data, models
  from melodi_jax.train import config, optim


def parse_gin(files: Sequence[str], bindings: Sequence[str], paths: Sequence[str] = ()
              ) -> list[str]:
  """gin_config.parse (gin cleared, then the files found as given or under `paths` and the
  package configs/, then the bindings), every configurable registered first; returns the
  resolved file paths."""
  register_configurables()
  return gin_config.parse(files, bindings, paths)


def operative_config(workdir: str) -> str:
  """The operative config.gin a training run wrote in `workdir`."""
  path = os.path.join(os.path.abspath(workdir), 'config.gin')
  if not os.path.isfile(path):
    raise UserError(f'{path} not found: --workdir must be a training run that took at least one '
                    'step')
  return path


def call_gin(fn: Callable, what: str):
  """Calls a gin-configured constructor, turning gin binding mistakes into UserErrors."""
  try:
    return fn()
  except UserError:
    raise
  except (TypeError, ValueError, RuntimeError) as e:
    message = str(e)
    if 'In call to configurable' in message or 'Required bindings' in message:
      raise UserError(f'gin config error while building {what}: {gin_config.message(e)}; fix the '
                      'binding in your gin files or --gin_bindings') from None
    raise


def build_model(segment_length: int | None = None):
  """models.build_from_gin of the parsed config, gin binding mistakes as UserErrors."""
  from melodi_jax import models  # pylint: disable=g-import-not-at-top
  return call_gin(lambda: models.build_from_gin(segment_length), 'the model')


def build_run_model(workdir: str, bindings: Sequence[str] = ()):
  """(model, TrainConfig) of the run in `workdir`, from its operative config.gin and `bindings`
  (gin is cleared first)."""
  from melodi_jax.train import config  # pylint: disable=g-import-not-at-top
  parse_gin([operative_config(workdir)], list(bindings), ['configs'])
  train_config = call_gin(config.TrainConfig, 'TrainConfig')
  return build_model(train_config.segment_length), train_config


def check_workdir(workdir: str | None) -> str:
  """Returns the absolute workdir after checking that a file can be created in it (or in its
  nearest existing parent); leaves nothing behind."""
  if not workdir:
    raise UserError('--workdir is required: pass the folder for checkpoints and metrics')
  workdir = os.path.abspath(workdir)
  probe = workdir
  while not os.path.exists(probe):
    probe = os.path.dirname(probe)
  if not os.path.isdir(probe):
    raise UserError(f'--workdir={workdir}: {probe} is a file, not a folder; pick another workdir')
  try:
    handle, name = tempfile.mkstemp(prefix='.melodi_write_probe_', dir=probe)
    os.close(handle)
    os.remove(name)
  except OSError as e:
    raise UserError(f'--workdir={workdir} is not writable ({probe}: {e.strerror}); pass a folder '
                    'you can write to') from None
  return workdir


def _parse_flags(argv: list[str]) -> list[str]:
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    print(f'error: {e}; see --helpfull for the flags', file=sys.stderr)
    sys.exit(2)


def run(main: Callable[[list[str]], None]):
  """`app.run(main)`, quiet by default (train/quiet.py), where a user's mistake is one line on
  stderr and exit status 2."""
  guarded = exit_on_user_error(main, stop=_exit)
  def wrapped(argv):
    quiet.setup()  # before anything imports TensorFlow
    try:
      guarded(argv)
    except Exception as e:  # pylint: disable=broad-exception-caught
      if not _joined_other_processes():
        raise
      import jax  # pylint: disable=g-import-not-at-top
      traceback.print_exc()
      print(f'error: process {jax.process_index()} of {jax.process_count()} stops on '
            f'{type(e).__name__}; when another process stopped first, its log says why',
            file=sys.stderr)
      _exit(1)
  app.run(wrapped, flags_parser=_parse_flags)


def _joined_other_processes() -> bool:
  if 'jax' not in sys.modules:
    return False
  import jax  # pylint: disable=g-import-not-at-top
  return jax.distributed.is_initialized() and jax.process_count() > 1


def _exit(status: int):
  """sys.exit, except in a process joined to others by jax.distributed: there a normal exit
  waits at the shutdown barrier (5 minutes) while the others wait in their next collective, so
  the process ends at once; the others see it die within --heartbeat_timeout_seconds and stop
  with an error naming it."""
  if not _joined_other_processes():
    sys.exit(status)
  absl_logging.flush()
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(status)  # pylint: disable=protected-access
