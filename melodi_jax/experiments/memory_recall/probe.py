"""Where does a stored pair get lost: not written, not carried, or not read?

  python -m melodi_jax.experiments.memory_recall.probe --workdir=DIR [--documents=2048]
      [--distance=1] [--pairs=1] [--json]

For episodes of N = --pairs key -> value pairs stored in window 0, asked for k = --distance windows
later (filler between), the trained model reads windows 0..k-1 (the memory carried across them);
then a linear read-out (ridge regression onto one-hot labels,
fitted on 3/4 of the documents, accuracy on the rest) tries to recover the stored value and the
stored key from each leaf of the memory it carries into window k, the query's (the long-term FIFO's keys and
values, the short-term memory tokens, the XL cache, ...), once from the slots concatenated and once
pooled over the slots (mean and max: a read-out that does not depend on where in the window the
pair was; the concatenated one must learn every position separately and fails on a
Transformer-XL cache that demonstrably holds the pair). Chance is 1 / value_vocab (1 / key_vocab).
With N > 1 pairs every figure is also given per pair, in store order (the first pair written, the
second, ...): the read-out of each pair's value and key, and the recall of each; `value` / `key` /
`recall` are their means.

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
  flags.DEFINE_integer('documents', 2048, 'Episodes to probe.')
  flags.DEFINE_integer('distance', 1, 'k: windows from the store to the query (>= 1).')
  flags.DEFINE_integer('pairs', 1, 'N: key -> value pairs stored per episode (>= 1).')
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


def store_order(episodes) -> tuple[np.ndarray, ...]:
  """Each episode's pairs in store order (the pair written first, then the second, ...), from
  `mqar.eval_document` results [(tokens, Episode)]: int[D, N] each of the stored value's
  position, the position whose prediction is scored for it (the query's last key token), the
  value's and the key's (last key token's) index in their vocabularies."""
  from melodi_jax.data import mqar  # pylint: disable=g-import-not-at-top
  order = np.stack([np.argsort(e.source_positions) for _, e in episodes])
  sources = np.take_along_axis(np.stack([e.source_positions for _, e in episodes]), order, 1)
  asked_at = np.take_along_axis(np.stack([e.value_positions for _, e in episodes]), order, 1) - 1
  values = np.stack([t[s] for (t, _), s in zip(episodes, sources)]) - mqar.VALUE_FIRST
  keys = np.stack([t[s - 1] for (t, _), s in zip(episodes, sources)]) - mqar.KEY_FIRST
  return sources, asked_at, values, keys


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
  if FLAGS.pairs < 1:
    raise cli.UserError(f'--pairs={FLAGS.pairs}: store at least one pair')
  import dataclasses  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from melodi_jax.data import mqar  # pylint: disable=g-import-not-at-top
  from melodi_jax.experiments import runs  # pylint: disable=g-import-not-at-top

  run = runs.restore(FLAGS.workdir, FLAGS.step)
  model, params = run.model, run.params
  config = mqar.MQARConfig()
  w = model.window_length
  rng = np.random.default_rng([config.seed, 99])
  k, n = FLAGS.distance, FLAGS.pairs
  episodes = [mqar.eval_document(rng, config, n, k) for _ in range(FLAGS.documents)]
  # k + 1 windows each (the store's, k - 1 of filler, the query's), filler after a document's end.
  span = (k + 1) * w
  tokens = np.stack([np.pad(t, (0, max(0, span - len(t))), constant_values=mqar.FILLER_FIRST)[:span]
                     for t, _ in episodes]).astype(np.int32)                     # [D, (k+1)W]
  starts = np.array([[True] + [False] * k])                                      # [1, k + 1]
  sources, asked_at, values, keys = store_order(episodes)
  if sources.max() >= w:
    raise cli.UserError(f'--pairs={n}: the store does not fit in window 0 ({w} tokens)')
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
      changed[lane, sources[start + lane, 0]] = (
          mqar.VALUE_FIRST + (values[start + lane, 0] + 7) % config.value_vocab)
    for source, out in ((chunk, logits), (changed, changed_logits)):
      result, _ = apply(params, source, model.init_memory(lanes),
                        np.repeat(starts, lanes, 0))
      out.append(np.asarray(result))
  logits, changed_logits = np.concatenate(logits), np.concatenate(changed_logits)
  rows = np.arange(len(tokens))
  # Influence of the first stored pair's value on the query that asks for it.
  first = changed_logits[rows, asked_at[:, 0]]
  delta = np.abs(logits[rows, asked_at[:, 0]] - first).max(-1)
  follows = first.argmax(-1) == mqar.VALUE_FIRST + (values[:, 0] + 7) % config.value_vocab
  recalled = logits[rows[:, None], asked_at].argmax(-1) == mqar.VALUE_FIRST + values  # [D, N]

  def read_out(features: np.ndarray) -> dict:
    by_value = [ridge_accuracy(features, values[:, i], config.value_vocab, FLAGS.ridge)
                for i in range(n)]
    by_key = [ridge_accuracy(features, keys[:, i], config.key_vocab, FLAGS.ridge)
              for i in range(n)]
    row = {'value': float(np.mean(by_value)), 'key': float(np.mean(by_key)),
           'features': int(features.shape[1])}
    if n > 1:
      row |= {'value_by_store_position': by_value, 'key_by_store_position': by_key}
    return row

  result = {
      'workdir': run.workdir, 'step': run.step, 'documents': len(tokens),
      'chance_value': 1 / config.value_vocab, 'chance_key': 1 / config.key_vocab,
      'distance': k, 'pairs': n, 'recall': float(recalled.mean()),
      'influence_max_logit_change': float(delta.mean()),
      'prediction_follows_changed_value': float(follows.mean()),
      'read_out': {name: read_out(np.concatenate(parts))
                   for name, parts in sorted(leaves.items())
                   if np.concatenate(parts).std() > 0},
      'probe_config': dataclasses.asdict(config) | {'pairs': n, 'distance': k},
  }
  if n > 1:
    result['recall_by_store_position'] = [float(r) for r in recalled.mean(0)]
    result['pairs_recalled_per_episode'] = float(recalled.sum(1).mean())
  if FLAGS.json:
    print(json.dumps(result, indent=1))
    return
  print(f'{result["workdir"]} step {result["step"]}: N = {n}, k = {k}, {len(tokens)} documents')
  print(f'recall at k = {k}: {result["recall"]:.3f} (chance {result["chance_value"]:.3f}); '
        f'largest logit change at the query when the stored value changes: '
        f'{result["influence_max_logit_change"]:.4f}; prediction follows it '
        f'{result["prediction_follows_changed_value"]:.3f}')
  if n > 1:
    print('recall by store position: ' + ', '.join(
        f'{r:.3f}' for r in result['recall_by_store_position'])
          + f'; pairs recalled per episode {result["pairs_recalled_per_episode"]:.2f}')
  print(f'linear read-out of the memory carried into window {k} (held-out accuracy):')
  for name, row in result['read_out'].items():
    print(f'  {name:50s} value {row["value"]:.3f}  key {row["key"]:.3f}  ({row["features"]} '
          'floats)')
    if n > 1:
      print(f'  {"":50s} value by store position '
            + ', '.join(f'{a:.3f}' for a in row['value_by_store_position']))


if __name__ == '__main__':
  define_flags()
  cli.run(main)
