"""`python -m melodi_jax.train --gin_file=... [--gin_bindings=...] --workdir=DIR`: trains (or
resumes) a run; see train/trainer.py for the loop and configs/base.gin for the knobs."""
from __future__ import annotations

import sys

from absl import flags, logging

from melodi_jax.train import cli

cli.define_common_flags()
flags.DEFINE_string('init_from', None, 'Warm start a new run from the checkpoint of another run '
                    '(any model kind): parameters with the same name and shape are loaded, the '
                    'rest initialised fresh (train/warm_start.py). Ignored when resuming.')
flags.DEFINE_integer('freeze_loaded_steps', 0, 'With --init_from: keep the loaded parameters '
                     'fixed for this many steps.')
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise cli.UserError(f'unexpected arguments {argv[1:]}; every option is a --flag')
  cli.initialize_distributed(FLAGS.multiprocess,  # before any other JAX call
                             FLAGS.heartbeat_timeout_seconds)
  workdir = cli.check_workdir(FLAGS.workdir)
  from melodi_jax.train import config  # pylint: disable=g-import-not-at-top
  cli.parse_gin(FLAGS.gin_file, FLAGS.gin_bindings, FLAGS.gin_search_paths)
  train_config = cli.call_gin(config.TrainConfig, 'TrainConfig').validate()
  from melodi_jax.train import collapse, trainer  # pylint: disable=g-import-not-at-top  (slow)
  try:
    trainer.train(train_config, workdir, tfds_data_dir=FLAGS.tfds_data_dir,
                  init_from=FLAGS.init_from, freeze_loaded_steps=FLAGS.freeze_loaded_steps)
  except (trainer.TrainingDiverged, collapse.TrainingCollapsed) as e:
    logging.flush()
    print(f'error: {e}', file=sys.stderr)
    sys.exit(1)


if __name__ == '__main__':
  cli.run(main)
