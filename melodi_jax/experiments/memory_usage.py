"""How much a trained model uses its memory:

  python -m melodi_jax.experiments.memory_usage --workdir=DIR [--task=books_bytes] [--split=validation] [--batches=8] [--json]

Two measurements, per layer:
- gates: the learned self/cross gate of every layer with a gated cross memory (MELODI's
  long-term memory, Memorizing's kNN memory, Block-Recurrent's states): the output is
  g * self + (1 - g) * cross with g = sigmoid(gate_logit); we print the mean weight on memory
  (1 - g) and its range over heads/channels.
- attention mass: over the first `--batches` eval batches of a split (memory carried as in the
  evaluation protocol), the fraction of each layer's self-attention softmax mass that falls on
  memory keys (everything other than the window's own tokens: MELODI's short-term memory, the
  Transformer-XL cache, retrieved chunks), averaged over lanes, heads and queries. Windows right
  after a document start have empty memory and count with mass 0, as they are. Beside it, the
  mass memory keys would get if every query spread its attention evenly over the keys it may
  see (`uniform_mass_on_memory`): a measured mass near that reference means the attention has
  not learned to prefer (or avoid) memory.
The probabilities are the ones the model's Attention computed (it sows them when asked:
layers/attention.py `INTERMEDIATES`); per batch only the sums reach the host.
"""
from __future__ import annotations

import collections
import json
from typing import Any, Sequence

import numpy as np


def gate_values(params: Any) -> dict[str, dict[str, float]]:
  """{layer path: {'memory_weight': mean(1 - sigmoid(gate_logit)), 'min', 'max'}}."""
  import jax  # pylint: disable=g-import-not-at-top
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    keys = [str(getattr(k, 'key', k)) for k in path]
    if keys and keys[-1] == 'gate_logit':
      weight = 1.0 - 1.0 / (1.0 + np.exp(-np.asarray(leaf, np.float64)))
      out['/'.join(keys[:-2])] = {'memory_weight': float(weight.mean()),
                                  'min': float(weight.min()), 'max': float(weight.max())}
  return out


def memory_mass(intermediates: Any) -> dict[str, tuple[Any, Any, Any]]:
  """{attention path: (mass, uniform mass, rows)} summed over what one apply sowed.

  intermediates: the INTERMEDIATES collection of `model.apply(..., mutable=[INTERMEDIATES])`.
  For every Attention with memory keys (keys before its own Tq keys): the self-attention softmax
  mass its rows (window, lane, head, query) put on them, the mass uniform attention over each
  row's allowed keys would put on them, and the number of rows (float32 scalars, traceable).
  """
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from melodi_jax.layers import attention  # pylint: disable=g-import-not-at-top
  masks = attention.sown(intermediates, 'self_mask')
  out = {}
  for name, probs in attention.sown(intermediates, 'self_probs').items():
    queries, keys = probs.shape[-2:]
    memory_keys = keys - queries                     # [N, B, H, Tq, Tk]: memory keys come first
    if not memory_keys:
      continue
    allowed = jnp.broadcast_to(masks[name], probs.shape).astype(jnp.float32)
    uniform = allowed / jnp.maximum(jnp.sum(allowed, axis=-1, keepdims=True), 1.0)
    out[name] = (jnp.sum(probs[..., :memory_keys]), jnp.sum(uniform[..., :memory_keys]),
                 jnp.asarray(probs.size // keys, jnp.float32))
  return out


def measure(workdir: str, task: str | None, split: str, batches: int) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  from melodi_jax.experiments import runs  # pylint: disable=g-import-not-at-top
  from melodi_jax.layers import attention  # pylint: disable=g-import-not-at-top
  from melodi_jax.train import inputs  # pylint: disable=g-import-not-at-top

  run = runs.restore(workdir)
  model, config = run.model, run.train_config
  spec = inputs.StreamSpec(task=task or config.task, split=split, batch_size=config.eval_batch,
                           segment_length=config.segment_length,
                           window_length=model.window_length, train=False)
  stream = inputs.open_stream(spec, None, model.vocab_size)
  sums = collections.defaultdict(lambda: np.zeros(3))   # name -> (mass, uniform mass, rows)

  def apply(params, tokens, memory, doc_start):
    (_, memory), state = model.apply({'params': params}, tokens, memory, doc_start,
                                     mutable=[attention.INTERMEDIATES])
    return memory, memory_mass(state[attention.INTERMEDIATES])

  apply = jax.jit(apply)
  memory = model.init_memory(spec.batch_size)
  read = 0
  for _ in range(batches):
    batch, _ = inputs.next_batch(stream)
    if batch is None:
      break
    memory, masses = apply(run.params, batch['inputs'], memory, batch['doc_start'])
    for name, values in masses.items():
      sums[name] += np.asarray(values, np.float64)
    read += 1
  means = {name: sums[name] / sums[name][2] for name in sorted(sums) if sums[name][2]}
  return {'workdir': run.workdir, 'step': run.step, 'task': spec.name, 'split': split,
          'batches': read, 'gates': gate_values(run.params),
          'attention_mass_on_memory': {name: float(m[0]) for name, m in means.items()},
          'uniform_mass_on_memory': {name: float(m[1]) for name, m in means.items()}}


def main(argv: Sequence[str]) -> None:
  from absl import flags  # pylint: disable=g-import-not-at-top
  from melodi_jax.train import cli  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise cli.UserError(f'unexpected arguments {argv[1:]}; every option is a --flag')
  f = flags.FLAGS
  if not f.workdir:
    raise cli.UserError('--workdir is required: pass the folder of a training run')
  result = measure(f.workdir, f.task, f.split, f.batches)
  if f.json:
    print(json.dumps(result, indent=1))
    return
  print(f'{result["workdir"]} step {result["step"]}, {result["task"]}/{result["split"]}, '
        f'{result["batches"]} batches')
  print('gated cross memory (output = g * self + (1 - g) * memory): weight on memory 1 - g')
  for name, gate in result['gates'].items():
    print(f'  {name:40s} mean {gate["memory_weight"]:.3f}  range {gate["min"]:.3f}..'
          f'{gate["max"]:.3f}')
  if not result['gates']:
    print('  (no gated memory in this model)')
  print('self-attention mass on memory keys (short-term memory / XL cache / retrieved chunks), '
        'and under uniform attention')
  for name, mass in result['attention_mass_on_memory'].items():
    print(f'  {name:40s} {mass:.3f}  (uniform {result["uniform_mass_on_memory"][name]:.3f})')
  if not result['attention_mass_on_memory']:
    print('  (no memory keys in any self-attention)')


if __name__ == '__main__':
  from absl import flags as _flags  # pylint: disable=g-import-not-at-top
  from melodi_jax.train import cli as _cli  # pylint: disable=g-import-not-at-top
  _flags.DEFINE_string('workdir', None, 'A training run folder.')
  _flags.DEFINE_string('task', None, 'Task (default: the run\'s TrainConfig.task).')
  _flags.DEFINE_string('split', 'validation', 'Split whose first batches are read.')
  _flags.DEFINE_integer('batches', 8, 'Eval batches to read.')
  _flags.DEFINE_bool('json', False, 'Print JSON.')
  _cli.run(main)
