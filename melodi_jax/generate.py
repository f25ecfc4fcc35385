"""`python -m melodi_jax.generate --workdir=DIR [--step=N] --prompt_file=F --max_new_tokens=N`

Streaming generation with memory (models/decoding.py): the prompt, of any length, goes through the
scanned model window by window, carrying memory; then tokens are sampled one at a time with a
per-window KV cache, and every full window updates the memory exactly as in training. Writes the
prompt followed by the continuation to stdout or --output. Without --workdir, --gin_file builds a
randomly initialised model (smoke tests, speed checks with --benchmark).
"""
from __future__ import annotations

import os
import sys
import time

from absl import flags, logging

from melodi_jax.train import cli

cli.define_gin_flags()
flags.DEFINE_string('workdir', None, 'Folder of a training run (config.gin + checkpoints).')
flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')
flags.DEFINE_string('prompt_file', None, 'Text file whose contents start the stream (any length).')
flags.DEFINE_integer('max_new_tokens', 256, 'Tokens to sample after the prompt (0: none).')
flags.DEFINE_float('temperature', 1.0, 'Sampling temperature; 0 picks the most likely token.')
flags.DEFINE_integer('top_k', 0, 'Sample among the k most likely tokens only (0: all).')
flags.DEFINE_integer('seed', 0, 'Sampling seed: the same seed gives the same tokens.')
flags.DEFINE_string('output', None, 'Write the text here instead of stdout.')
flags.DEFINE_integer('prefill_windows', 8, 'Prompt windows per scanned call (memory vs. speed).')
flags.DEFINE_bool('benchmark', False, 'Also time the sampling loop after a warm-up run (tokens/s '
                  'without compilation) and print it to stderr.')
FLAGS = flags.FLAGS


def _check_flags():
  if not FLAGS.prompt_file:
    raise cli.UserError('--prompt_file is required: pass a text file with the prompt')
  if not os.path.isfile(FLAGS.prompt_file):
    raise cli.UserError(f'--prompt_file={FLAGS.prompt_file} is not a file; pass an existing text '
                        'file')
  for name in ('max_new_tokens', 'top_k'):
    if getattr(FLAGS, name) < 0:
      raise cli.UserError(f'--{name}={getattr(FLAGS, name)} must be >= 0')
  if FLAGS.temperature < 0:
    raise cli.UserError(f'--temperature={FLAGS.temperature} must be >= 0 (0: greedy)')
  if FLAGS.prefill_windows <= 0:
    raise cli.UserError(f'--prefill_windows={FLAGS.prefill_windows} must be positive')
  if FLAGS.workdir:
    return [cli.operative_config(FLAGS.workdir)]
  if not FLAGS.gin_file:
    raise cli.UserError('--workdir is required: pass the folder of a training run (or --gin_file '
                        'for a randomly initialised model)')
  if FLAGS.step is not None:
    raise cli.UserError('--step needs --workdir (a run with checkpoints)')
  return []


def load_params(model, workdir: str | None, step: int | None, seed: int = 0):
  """(params of the model on one device, step) from the run's checkpoint, or a fresh init
  (step None) without a workdir."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  def init(rng):
    tokens = jnp.zeros((1, model.window_length), jnp.int32)
    return model.init(rng, tokens, model.init_memory(1), jnp.ones((1, 1), bool))['params']

  if not workdir:
    return nn.meta.unbox(jax.jit(init)(jax.random.key(seed))), None
  from melodi_jax.train import checkpoints  # pylint: disable=g-import-not-at-top
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                          nn.meta.unbox(jax.eval_shape(init, jax.random.key(0))))
  checkpointer = checkpoints.Checkpointer(os.path.abspath(workdir), read_only=True)
  restored = checkpointer.restore({'params': abstract}, step=step)
  checkpointer.close()
  if restored is None:
    raise cli.UserError(f'no checkpoint in {checkpointer.directory}; train first')
  return restored.params, restored.step


def main(argv):
  if len(argv) > 1:
    raise cli.UserError(f'unexpected arguments {argv[1:]}; every option is a --flag')
  operative = _check_flags()
  with open(FLAGS.prompt_file, 'rb') as f:
    prompt = f.read()
  from melodi_jax import data  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from melodi_jax.models import decoding  # pylint: disable=g-import-not-at-top
  from melodi_jax.train import config  # pylint: disable=g-import-not-at-top

  cli.parse_gin(operative + list(FLAGS.gin_file), FLAGS.gin_bindings, FLAGS.gin_search_paths)
  train_config = cli.call_gin(config.TrainConfig, 'TrainConfig')
  model = cli.build_model()
  vocabulary = data.task_vocabulary(train_config.task)
  if vocabulary.vocab_size > model.vocab_size:
    raise cli.UserError(f'the {vocabulary.name} vocabulary of TrainConfig.task = '
                        f'{train_config.task!r} has {vocabulary.vocab_size} tokens, the model '
                        f'{model.vocab_size} (ModelConfig.vocab_size); make them agree')
  prompt_ids, _ = vocabulary.encode(prompt)
  if not len(prompt_ids):
    raise cli.UserError(f'--prompt_file={FLAGS.prompt_file} is empty: the model has no '
                        'start-of-text token, so give it at least one character')

  params, step = load_params(model, FLAGS.workdir, FLAGS.step, FLAGS.seed)
  decoder = decoding.Decoder(model, params, prefill_windows=FLAGS.prefill_windows)
  begin = time.perf_counter()
  state = decoder.prefill(decoder.start(1), prompt_ids[None])
  jax.block_until_ready(state.logits)
  prefilled = time.perf_counter()
  rng = jax.random.key(FLAGS.seed)
  sample = dict(temperature=FLAGS.temperature, top_k=FLAGS.top_k)
  new_ids, _ = decoder.generate(state, FLAGS.max_new_tokens, rng, **sample)
  done = time.perf_counter()
  logging.info('%s step %s: prompt %d tokens in %.2fs, %d new tokens in %.2fs (compilation '
               'included)', FLAGS.workdir or 'random init', step, len(prompt_ids),
               prefilled - begin, FLAGS.max_new_tokens, done - prefilled)
  if FLAGS.benchmark and FLAGS.max_new_tokens:
    again = time.perf_counter()
    repeat, _ = decoder.generate(state, FLAGS.max_new_tokens, rng, **sample)
    seconds = time.perf_counter() - again
    assert np.array_equal(repeat, new_ids), 'sampling with one seed must repeat itself'
    print(f'benchmark: {FLAGS.max_new_tokens} tokens in {seconds:.3f}s = '
          f'{FLAGS.max_new_tokens / seconds:.1f} tokens/s (sampling loop, compiled; window '
          f'{model.window_length}, prompt {len(prompt_ids)} tokens, {jax.devices()[0].platform})',
          file=sys.stderr)

  full = vocabulary.decode(np.concatenate([prompt_ids, new_ids[0]]))
  head = vocabulary.decode(prompt_ids)
  continuation = full[len(head):] if full.startswith(head) else vocabulary.decode(new_ids[0])
  text = prompt + continuation.encode('utf-8')  # the prompt exactly as given, then the new text
  if FLAGS.output:
    with open(FLAGS.output, 'wb') as f:
      f.write(text)
  else:
    sys.stdout.buffer.write(text)
    sys.stdout.flush()


if __name__ == '__main__':
  cli.run(main)
