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
The attention is recomputed by intercepting `Attention.__call__` (nothing in the model changes);
the numbers reach the host through `jax.debug.callback`.
"""
from __future__ import annotations

import collections
import json
import threading
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


class MassRecorder:
  """Host-side sums of the attention mass on memory keys, per attention module path."""

  def __init__(self):
    self._lock = threading.Lock()
    self.sums = collections.defaultdict(float)
    self.uniform_sums = collections.defaultdict(float)
    self.counts = collections.defaultdict(float)

  def add(self, name: str, mass_sum, count, uniform_sum=0.0):
    with self._lock:
      self.sums[name] += float(mass_sum)
      self.uniform_sums[name] += float(uniform_sum)
      self.counts[name] += float(count)

  def means(self) -> dict[str, float]:
    return {name: self.sums[name] / self.counts[name] for name in sorted(self.sums)
            if self.counts[name]}

  def uniform_means(self) -> dict[str, float]:
    """The same mean under uniform attention over each query's allowed keys."""
    return {name: self.uniform_sums[name] / self.counts[name] for name in sorted(self.sums)
            if self.counts[name]}


def memory_mass_interceptor(recorder: MassRecorder):
  """A flax method interceptor that records, for every Attention call with memory key groups,
  the softmax mass its queries put on those groups (recomputed like Attention.__call__)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from melodi_jax.layers import attention as attention_lib  # pylint: disable=g-import-not-at-top

  def interceptor(next_fun, args, kwargs, context):
    module = context.module
    if not isinstance(module, attention_lib.Attention) or context.method_name != '__call__':
      return next_fun(*args, **kwargs)
    x, positions = args[0], np.asarray(args[1])
    groups = args[2] if len(args) > 2 else kwargs.get('groups', ())
    span = args[4] if len(args) > 4 else kwargs.get('span')
    if groups:
      h = module.norm(x)
      query, keys = module.query(h), module.key(h)
      if module.normalize_qk:
        keys = attention_lib._l2_normalize(keys)  # pylint: disable=protected-access
        query = (attention_lib._l2_normalize(query)  # pylint: disable=protected-access
                 * module.qk_scale[:, None].astype(module.dtype))
      else:
        query = query * module.head_dim ** -0.5
      everything = list(groups) + [attention_lib.KeyGroup(keys, keys, positions, None)]
      all_keys = jnp.concatenate([g.keys.astype(module.dtype) for g in everything], axis=1)
      key_positions = np.concatenate([g.positions for g in everything])
      mask = jnp.asarray(attention_lib.causal_mask(positions, key_positions, span))[None, None]
      valid = jnp.concatenate([attention_lib._valid_or_ones(g) for g in everything], axis=1)  # pylint: disable=protected-access
      mask = mask & valid[:, None, None, :]
      logits = jnp.einsum('bqhd,bkhd->bhqk', query, all_keys, preferred_element_type=jnp.float32)
      logits = logits + module.position_bias(positions, key_positions)
      logits = jnp.where(mask, logits, -1e30)
      probs = jax.nn.softmax(logits, axis=-1) * mask
      memory_keys = sum(g.keys.shape[1] for g in groups)
      mass = jnp.sum(probs[..., :memory_keys])
      allowed = jnp.broadcast_to(mask, probs.shape).astype(jnp.float32)
      uniform = allowed / jnp.maximum(jnp.sum(allowed, axis=-1, keepdims=True), 1.0)
      uniform_mass = jnp.sum(uniform[..., :memory_keys])
      count = jnp.asarray(probs.shape[0] * probs.shape[1] * probs.shape[2], jnp.float32)
      name = '/'.join(module.scope.path)
      jax.debug.callback(lambda m, c, u, name=name: recorder.add(name, m, c, u), mass, count,
                         uniform_mass)
    return next_fun(*args, **kwargs)

  return interceptor


def measure(workdir: str, task: str | None, split: str, batches: int) -> dict:
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from melodi_jax.experiments import runs  # pylint: disable=g-import-not-at-top
  from melodi_jax.train import inputs  # pylint: disable=g-import-not-at-top

  run = runs.restore(workdir)
  model, config = run.model, run.train_config
  spec = inputs.StreamSpec(task=task or config.task, split=split, batch_size=config.eval_batch,
                           segment_length=config.segment_length,
                           window_length=model.window_length, train=False)
  stream = inputs.open_stream(spec, None, model.vocab_size)
  recorder = MassRecorder()

  def apply(params, tokens, memory, doc_start):
    with nn.intercept_methods(memory_mass_interceptor(recorder)):
      return model.apply({'params': params}, tokens, memory, doc_start)

  apply = jax.jit(apply)
  memory = model.init_memory(spec.batch_size)
  read = 0
  for _ in range(batches):
    batch, _ = inputs.next_batch(stream)
    if batch is None:
      break
    _, memory = apply(run.params, batch['inputs'], memory, batch['doc_start'])
    read += 1
  jax.effects_barrier()
  return {'workdir': run.workdir, 'step': run.step, 'task': spec.name, 'split': split,
          'batches': read, 'gates': gate_values(run.params),
          'attention_mass_on_memory': recorder.means(),
          'uniform_mass_on_memory': recorder.uniform_means()}


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
