"""Where does a stored pair get lost: not written, not carried, or not read?

  python -m melodi_jax.experiments.memory_recall.probe --workdir=DIR [--documents=2048]
      [--distance=1] [--json]

For N = 1 episodes (one key -> value pair stored in window 0, asked for k = --distance windows
later, filler between), the trained model reads windows 0..k-1 (the memory carried across them);
then a linear read-out (ridge regression onto one-hot labels,
fitted on 3/4 of the documents, accuracy on the rest) tries to recover the stored value and the
stored key from each leaf of the memory it carries into window k, the query's (the long-term FIFO's keys and
values, the short-term memory tokens, the XL cache, ...), once from the slots concatenated and once
pooled over the slots (mean and max: a read-out that does not depend on where in the window the
pair was; the concatenated one must learn every position separately and fails on a
Transformer-XL cache that demonstrably holds the pair). Chance is 1 / value_vocab (1 / key_vocab).

- decodable from a leaf but the model's recall at k is at chance: written and carried, not read;
- not decodable from any leaf: not written (the write path never learned to keep the pair), or,
  when k = 1 decodes and a larger k does not, written and not carried.
Beside it, the influence of the stored value on the query's logits: the mean largest change of a
logit at the query when only the stored value is changed (teacher-forced, same query tokens), and
how often the prediction follows the changed value. A model without memory across windows has
exactly 0 there.
"""
from __future__ import annotations

import json
from typing import Sequence

from absl import flags
import numpy as np

from melodi_jax.train import cli

def define_flags() -> None:
  """The command-line flags (defined only when run as a program: the library stays importable
  beside other entry points)."""
  flags.DEFINE_string('workdir', None, 'A training run folder (trained on mqar_bytes).')
  flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')
  flags.DEFINE_integer('documents', 2048, 'N = 1 episodes to probe.')
  flags.DEFINE_integer('distance', 1, 'k: windows from the store to the query (>= 1).')
  flags.DEFINE_float('ridge', 1.0, 'L2 penalty of the linear read-out (features standardised).')
  flags.DEFINE_bool('json', False, 'Print JSON.')


FLAGS = flags.FLAGS


def ridge_accuracy(features: np.ndarray, labels: np.ndarray, classes: int, penalty: float,
                   train_fraction: float = 0.75) -> float:
  """Held-out accuracy of a ridge read-out features [D, F] -> one of `classes` labels [D]."""
  split = int(len(labels) * train_fraction)
  mean, std = features[:split].mean(0), features[:split].std(0) + 1e-6
  x = (features - mean) / std
  x = np.concatenate([x, np.ones((len(x), 1))], axis=1)
  targets = np.eye(classes)[labels[:split]]
  # Dual form when there are more features than documents.
  if x.shape[1] > split:
    alpha = np.linalg.solve(x[:split] @ x[:split].T + penalty * np.eye(split), targets)
    scores = x[split:] @ (x[:split].T @ alpha)
  else:
    weights = np.linalg.solve(x[:split].T @ x[:split] + penalty * np.eye(x.shape[1]),
                              x[:split].T @ targets)
    scores = x[split:] @ weights
  return float(np.mean(scores.argmax(1) == labels[split:]))


def _sibling(tree, path, name: str):
  """The leaf called `name` next to the leaf at `path` in a dict pytree, or None."""
  node = tree
  for entry in path[:-1]:
    node = node[entry.key]
  return node.get(name) if isinstance(node, dict) else None


def main(argv: Sequence[str]) -> None:
  del argv
  if not FLAGS.workdir:
    raise cli.UserError('--workdir is required: pass the folder of a training run')
  if FLAGS.distance < 1:
    raise cli.UserError(f'--distance={FLAGS.distance}: the query must lie >= 1 window after '
                        'the store (k = 0 leaves nothing for the memory to carry)')
  import dataclasses  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from melodi_jax.data import mqar  # pylint: disable=g-import-not-at-top
  from melodi_jax.experiments import runs  # pylint: disable=g-import-not-at-top

  run = runs.restore(FLAGS.workdir, FLAGS.step)
  model, params = run.model, run.params
  config = mqar.MQARConfig()
  w = model.window_length
  rng = np.random.default_rng([config.seed, 99])
  k = FLAGS.distance
  episodes = [mqar.eval_document(rng, config, 1, k) for _ in range(FLAGS.documents)]
  # k + 1 windows each (the store's, k - 1 of filler, the query's), filler after a document's end.
  span = (k + 1) * w
  tokens = np.stack([np.pad(t, (0, max(0, span - len(t))), constant_values=mqar.FILLER_FIRST)[:span]
                     for t, _ in episodes]).astype(np.int32)                     # [D, (k+1)W]
  starts = np.array([[True] + [False] * k])                                      # [1, k + 1]
  values = np.array([t[e.source_positions[0]] for t, e in episodes]) - mqar.VALUE_FIRST
  keys = np.array([t[e.source_positions[0] - 1] for t, e in episodes]) - mqar.KEY_FIRST
  apply = jax.jit(lambda p, t, m, d: model.apply({'params': p}, t, m, d))
  batch = 64
  leaves: dict[str, list[np.ndarray]] = {}
  logits, changed_logits = [], []
  for start in range(0, len(tokens), batch):
    chunk = tokens[start:start + batch]
    lanes = len(chunk)
    memory = model.init_memory(lanes)
    _, after = apply(params, chunk[:, :k * w], memory, np.repeat(starts[:, :k], lanes, 0))
    for path, leaf in jax.tree_util.tree_flatten_with_path(after)[0]:
      leaf = np.asarray(leaf)
      if not np.issubdtype(leaf.dtype, np.floating):
        continue
      # Slot memories (a bool `valid` [B, L] beside the leaf): only the slots filled so far.
      valid = _sibling(after, path, 'valid')
      if valid is not None and valid.shape == leaf.shape[:2]:
        leaf = leaf[:, np.asarray(valid)[0]]
      name = jax.tree_util.keystr(path)
      leaves.setdefault(name, []).append(leaf.reshape(lanes, -1))
      if leaf.ndim >= 3:  # [B, slots, ...]: also pooled over the slots (position-invariant)
        pooled = np.concatenate([leaf.mean(1), leaf.max(1)], axis=-1)
        leaves.setdefault(name + ' pooled', []).append(pooled.reshape(lanes, -1))
    # Influence: the same documents with only the stored value changed.
    changed = chunk.copy()
    for lane in range(lanes):
      position = episodes[start + lane][1].source_positions[0]
      changed[lane, position] = mqar.VALUE_FIRST + (values[start + lane] + 7) % config.value_vocab
    for source, out in ((chunk, logits), (changed, changed_logits)):
      result, _ = apply(params, source, model.init_memory(lanes),
                        np.repeat(starts, lanes, 0))
      out.append(np.asarray(result))
  logits, changed_logits = np.concatenate(logits), np.concatenate(changed_logits)
  at = np.array([e.value_positions[0] - 1 for _, e in episodes])
  rows = np.arange(len(at))
  delta = np.abs(logits[rows, at] - changed_logits[rows, at]).max(-1)
  follows = changed_logits[rows, at].argmax(-1) == (
      mqar.VALUE_FIRST + (values + 7) % config.value_vocab)
  recalled = logits[rows, at].argmax(-1) == mqar.VALUE_FIRST + values
  result = {
      'workdir': run.workdir, 'step': run.step, 'documents': len(tokens),
      'chance_value': 1 / config.value_vocab, 'chance_key': 1 / config.key_vocab,
      'distance': k, 'recall': float(recalled.mean()),
      'influence_max_logit_change': float(delta.mean()),
      'prediction_follows_changed_value': float(follows.mean()),
      'read_out': {name: {'value': ridge_accuracy(np.concatenate(parts), values,
                                                  config.value_vocab, FLAGS.ridge),
                          'key': ridge_accuracy(np.concatenate(parts), keys, config.key_vocab,
                                                FLAGS.ridge),
                          'features': int(np.concatenate(parts).shape[1])}
                   for name, parts in sorted(leaves.items())
                   if np.concatenate(parts).std() > 0},
      'probe_config': dataclasses.asdict(config) | {'pairs': 1, 'distance': k},
  }
  if FLAGS.json:
    print(json.dumps(result, indent=1))
    return
  print(f'{result["workdir"]} step {result["step"]}: N = 1, k = {k}, {len(tokens)} documents')
  print(f'recall at k = {k}: {result["recall"]:.3f} (chance {result["chance_value"]:.3f}); '
        f'largest logit change at the query when the stored value changes: '
        f'{result["influence_max_logit_change"]:.4f}; prediction follows it '
        f'{result["prediction_follows_changed_value"]:.3f}')
  print(f'linear read-out of the memory carried into window {k} (held-out accuracy):')
  for name, row in result['read_out'].items():
    print(f'  {name:50s} value {row["value"]:.3f}  key {row["key"]:.3f}  ({row["features"]} '
          'floats)')


if __name__ == '__main__':
  define_flags()
  cli.run(main)
