"""`python -m melodi_jax.evaluate --workdir=DIR [--step=N] [--split=test] [--task=NAME | --text_dir=PATH]`

Restores a checkpoint of a training run and runs the evaluation protocol (train/evaluator.py) over
a split or a folder of text files; writes DIR/eval/<task>_<split>_<step>.json and prints one line
(bits/byte first), or that JSON with --json.
"""
from __future__ import annotations

import os

from absl import flags, logging

from melodi_jax.train import cli

cli.define_common_flags()
flags.DEFINE_integer('step', None, 'Checkpoint step to evaluate (default: the latest).')
flags.DEFINE_string('task', None, 'Task to evaluate (default: TrainConfig.task of the run).')
flags.DEFINE_string('split', 'test', 'Split to evaluate.')
flags.DEFINE_string('text_dir', None, 'Evaluate on every text file in this folder instead.')
flags.DEFINE_integer('batch_size', None, 'Eval lanes (default: TrainConfig.eval_batch_size, '
                     'else batch_size of the run).')
flags.DEFINE_bool('json', False, 'Print the result JSON (the file written under DIR/eval/) '
                  'instead of the one-line summary.')
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise cli.UserError(f'unexpected arguments {argv[1:]}; every option is a --flag')
  cli.initialize_distributed(FLAGS.multiprocess,  # before any other JAX call
                             FLAGS.heartbeat_timeout_seconds)
  if not FLAGS.workdir:
    raise cli.UserError('--workdir is required: pass the folder of a training run')
  workdir = os.path.abspath(FLAGS.workdir)
  operative = cli.operative_config(workdir)
  if FLAGS.text_dir and not os.path.isdir(FLAGS.text_dir):
    raise cli.UserError(f'--text_dir={FLAGS.text_dir} is not a folder; pass a folder of text '
                        'files')
  import jax  # pylint: disable=g-import-not-at-top
  from melodi_jax.train import checkpoints, config, evaluator, inputs, partitioning  # pylint: disable=g-import-not-at-top

  cli.parse_gin([operative] + list(FLAGS.gin_file), FLAGS.gin_bindings, FLAGS.gin_search_paths)
  train_config = cli.call_gin(config.TrainConfig, 'TrainConfig')
  model = cli.build_model(train_config.segment_length)

  data_axis, model_axis = train_config.mesh_shape
  if model_axis == -1 or jax.device_count() % max(model_axis, 1):
    model_axis = 1
  mesh = partitioning.make_mesh((-1, model_axis))
  rules = (tuple(train_config.axis_rules) if train_config.axis_rules
           else partitioning.default_rules())
  del data_axis
  spec = inputs.StreamSpec(
      task=FLAGS.task or train_config.task, split=FLAGS.split,
      batch_size=FLAGS.batch_size or train_config.eval_batch,
      segment_length=train_config.segment_length, window_length=model.window_length,
      train=False, text_dir=FLAGS.text_dir, tfds_data_dir=FLAGS.tfds_data_dir)

  params_sharding, abstract = partitioning.restorable_params(
      model, spec.batch_size, spec.segment_length, mesh, rules)
  runner = evaluator.Evaluator(model, mesh, params_sharding, spec,
                               position_buckets=train_config.eval_position_buckets)
  stream = runner.open()  # data errors surface before the checkpoint is read

  checkpointer = checkpoints.Checkpointer(workdir, read_only=True)
  restored = checkpointer.restore({'params': abstract}, step=FLAGS.step)
  if restored is None:
    raise cli.UserError(f'no checkpoint in {checkpointer.directory}; train first')
  logging.info('evaluating step %d on %s/%s', restored.step, spec.name, spec.split)
  result = runner.run(restored.params, restored.step, stream=stream)
  path = evaluator.write_result(workdir, result)
  checkpointer.close()
  if FLAGS.json:
    with open(path, encoding='utf-8') as f:
      print(f.read(), end='')
  else:
    print(f'{spec.name}/{spec.split} at step {result.step}: {result.bits_per_byte:.4f} bits/byte '
          f'({result.nats_per_token:.4f} nats/token, perplexity {result.perplexity:.3f}) over '
          f'{result.tokens:,.0f} predicted tokens in {result.documents:,} documents '
          f'({result.bytes:,.0f} bytes), memory carried across segments -> {path}')


if __name__ == '__main__':
  cli.run(main)
