"""A tiny entry point for tests/test_multiprocess.py (no tests here): joins the other processes
as the entry points do (cli.run, --multiprocess), then runs cross-process computations.

  --delay=S: process 0 waits S seconds before its first computation (a slower compile).
  --fail: process 1 raises right after joining.
"""
import time

from absl import flags

from melodi_jax.train import cli

cli.define_common_flags()
flags.DEFINE_float('delay', 0.0, 'Seconds process 0 waits before its first computation.')
flags.DEFINE_bool('fail', False, 'Process 1 raises right after joining.')
flags.DEFINE_integer('rounds', 3, 'Cross-process computations to run.')
FLAGS = flags.FLAGS


def main(argv):
  del argv
  cli.initialize_distributed(FLAGS.multiprocess, FLAGS.heartbeat_timeout_seconds)
  import jax  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  if FLAGS.fail and jax.process_index() == 1:
    raise RuntimeError('planted failure in process 1')
  # The two kinds of cross-process computation the trainer runs: a step over a data-parallel
  # mesh of every device, and host all-gathers (one device per process).
  mesh = jax.make_mesh((jax.device_count(), 1), ('data', 'model'))
  batch = jax.make_array_from_process_local_data(
      jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data')),
      np.full([jax.local_device_count()], jax.process_index() + 1, np.int32))
  step = jax.jit(jnp.sum, out_shardings=jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec()))
  if jax.process_index() == 0:
    time.sleep(FLAGS.delay)
  for i in range(FLAGS.rounds):
    values = multihost_utils.process_allgather(np.asarray([jax.process_index() + 1], np.int32))
    print(f'round {i}: {int(np.sum(values))} {int(step(batch))}', flush=True)
    time.sleep(0.1)


if __name__ == '__main__':
  cli.run(main)
