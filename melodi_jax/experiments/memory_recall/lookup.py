"""Which layer looks the stored pair up, and where a kNN memory must sit to reuse that lookup.

  python -m melodi_jax.experiments.memory_recall.lookup --workdir=DIR [--documents=32] [--json]

DIR: a run trained on mqar_bytes (typically a stage-1 run, k = 0 only) of an XL-based model.
1. Attention: on N = 1 and N = 4 episodes with store and query in one window (k = 0), the
   attention weight each layer's heads put, from a query's key token (the position that predicts
   the value), on the stored value's position. A layer where it is ~1 does the content lookup.
2. Zero-shot placement: the run's parameters in a Memorizing-dense model (a kNN buffer of 2048
   past keys/values, gate logit 0, i.e. half memory) with the buffer in layer L, for every L,
   scored on the test grid's first --documents documents per (N, k). Memorizing's stored keys
   carry no gradient, so its buffer is useful only in a layer whose local keys already answer a
   content query: this shows which, before any training.
Attention weights are the self-attention probabilities the model's Attention sows when asked
(layers/attention.py `INTERMEDIATES`).
"""
from __future__ import annotations

import json
from typing import Sequence

from absl import flags
import numpy as np

from melodi_jax.train import cli

DISTANCES = (0, 1, 2, 4, 8, 16)
PAIRS = (1, 4)


def define_flags() -> None:
  """The command-line flags (defined only when run as a program)."""
  flags.DEFINE_string('workdir', None, 'A training run folder (trained on mqar_bytes).')
  flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')
  flags.DEFINE_integer('documents', 32, 'Documents per (N, k) cell.')
  flags.DEFINE_bool('json', False, 'Print JSON.')


FLAGS = flags.FLAGS


def lookup_attention(model, params, config, documents: int) -> dict:
  """{N: [[weight on the stored value per head] per layer]} at k = 0 (one window)."""
  import jax  # pylint: disable=g-import-not-at-top
  from melodi_jax.data import mqar  # pylint: disable=g-import-not-at-top
  from melodi_jax.layers import attention  # pylint: disable=g-import-not-at-top
  w = model.window_length
  apply = jax.jit(lambda p, t, m, d: model.apply({'params': p}, t, m, d,
                                                 mutable=[attention.INTERMEDIATES]))
  result = {}
  for pairs in PAIRS:
    rng = np.random.default_rng([config.seed, 31, pairs])
    episodes = [mqar.eval_document(rng, config, pairs, 0) for _ in range(documents)]
    tokens = np.stack([np.pad(t, (0, max(0, w - len(t))), constant_values=mqar.FILLER_FIRST)[:w]
                       for t, _ in episodes]).astype(np.int32)
    _, state = apply(params, tokens, model.init_memory(documents), np.ones((documents, 1), bool))
    layers = []
    for probs in attention.sown(state[attention.INTERMEDIATES], 'self_probs').values():
      probs = np.asarray(probs[0])  # the one window: [B, H, Tq, Tk]
      own = probs.shape[-1] - w  # the window's own keys come last (after cache / memory keys)
      weights = [probs[d, :, q - 1, own + s]
                 for d, (_, e) in enumerate(episodes)
                 for q, s in zip(e.value_positions, e.source_positions)]
      layers.append(np.round(np.mean(weights, axis=0), 4).tolist())
    result[str(pairs)] = layers
  return result


def zero_shot(run, config, documents: int) -> dict:
  """{layer: [{pairs, distance, accuracy}, ...]} with a dense kNN buffer placed in each layer."""
  import jax  # pylint: disable=g-import-not-at-top
  from melodi_jax.data import mqar  # pylint: disable=g-import-not-at-top
  from melodi_jax.experiments import runs  # pylint: disable=g-import-not-at-top
  from melodi_jax.experiments.memory_recall import score  # pylint: disable=g-import-not-at-top
  grid = mqar.MQARConfig(**{**config.__dict__, 'eval_pairs': PAIRS,
                            'eval_distances': DISTANCES, 'eval_documents': documents})
  docs, episodes, _ = mqar.split_documents(grid, 'test')
  result = {}
  for layer in range(run.model.config.num_layers):
    model, _ = cli.build_run_model(run.workdir, (
        'ModelConfig.stack = @MemorizingStack()', f'MemorizingStack.memory_layer = {layer}',
        'MemorizingStack.memory_slots = 2048', 'MemorizingStack.top_k = 0'))
    params = jax.tree.map(np.asarray, run.params)
    for name, layer_params in params['stack'].items():
      layer_params['attention'].pop('gate_logit', None)
      if name == f'layer_{layer:02d}':
        layer_params['attention']['gate_logit'] = np.zeros((model.config.num_heads, 1), np.float32)
    apply = jax.jit(lambda p, t, m, d, model=model: model.apply({'params': p}, t, m, d))
    cells = score.score(lambda t, m, d, apply=apply, params=params: apply(params, t, m, d),
                        model.init_memory, docs, [e for (e,) in episodes],
                        window_length=model.window_length,
                        segment_length=run.train_config.segment_length, batch_size=documents)
    result[str(layer)] = [{'pairs': c.pairs, 'distance': c.distance,
                           'accuracy': round(c.accuracy, 4)} for c in cells]
  return result


def main(argv: Sequence[str]) -> None:
  del argv
  if not FLAGS.workdir:
    raise cli.UserError('--workdir is required: pass the folder of a training run')
  from melodi_jax.data import mqar  # pylint: disable=g-import-not-at-top
  from melodi_jax.experiments import runs  # pylint: disable=g-import-not-at-top
  run = runs.restore(FLAGS.workdir, FLAGS.step, FLAGS.documents)
  kind = type(run.model.config.stack).__name__
  if kind not in ('TransformerXLStack', 'MemorizingStack'):
    raise cli.UserError(f'{FLAGS.workdir} trained a {kind}: pass a Transformer-XL or Memorizing '
                        'run (the placement test reuses its XL layers)')
  config = mqar.MQARConfig()  # as bound by the run's config.gin
  attention = lookup_attention(run.model, run.params, config, FLAGS.documents)
  placement = zero_shot(run, config, FLAGS.documents)
  result = {'workdir': run.workdir, 'step': run.step, 'chance': mqar.chance(config),
            'documents_per_cell': FLAGS.documents,
            'attention_on_stored_value_k0': attention, 'zero_shot_knn_layer': placement}
  if FLAGS.json:
    print(json.dumps(result, indent=1))
    return
  print(f'{run.workdir} step {run.step}')
  for pairs, layers in attention.items():
    for layer, heads in enumerate(layers):
      print(f'k = 0, N = {pairs}: layer {layer} attention on the stored value per head '
            f'{" ".join(f"{h:.2f}" for h in heads)}')
  for layer, cells in placement.items():
    print(f'kNN buffer in layer {layer} (zero-shot): ' + ', '.join(
        f'N{c["pairs"]} k{c["distance"]} {c["accuracy"]:.2f}' for c in cells))


if __name__ == '__main__':
  define_flags()
  cli.run(main)
