"""The measuring side of `numerics.py`: run by file path inside any checkout of the repository.

  python <this file> OUT.npz KIND[,KIND...] GIN_DIR [PARAMS.npz]

imports nothing of melodi_jax but `models.build` and `DecoderLM`'s init/apply/init_memory, which
older revisions have too, so the checkout's own package (first on PYTHONPATH) does the computing.
For each model kind: the model of GIN_DIR/models/<kind>.gin + GIN_DIR/sizes/small.gin (the files
of the tree that asks, so both sides build the same model), one fixed batch (2 lanes x 4 windows,
lane 0 starting a document in window 2 too), and writes <kind>/logits, <kind>/loss (mean
next-token cross entropy), <kind>/loss_after_step (after one SGD step of its gradient) and the
parameters as <kind>/params/<path>. With PARAMS.npz the parameters are read from it instead of
initialised (both sides then compute with the same weights); a kind whose parameter paths differ
gets <kind>/error.
"""
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

LANES, WINDOWS, SEED, LEARNING_RATE = 2, 4, 0, 0.1


def _flatten(params) -> dict[str, np.ndarray]:
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  return {'/'.join(str(getattr(k, 'key', k)) for k in path): np.asarray(v) for path, v in leaves}


def _unflatten_like(params, flat: dict[str, np.ndarray]):
  leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
  names = ['/'.join(str(getattr(k, 'key', k)) for k in path) for path, _ in leaves]
  if sorted(names) != sorted(flat):
    missing = sorted(set(names) ^ set(flat))[:3]
    raise KeyError(f'parameter paths differ between the revisions (e.g. {missing})')
  return jax.tree_util.tree_unflatten(treedef, [jnp.asarray(flat[n]) for n in names])


def measure(kind: str, gin_dir: str, given: dict[str, np.ndarray] | None) -> dict:
  from melodi_jax import models  # pylint: disable=g-import-not-at-top
  model = models.build([f'{gin_dir}/models/{kind}.gin', f'{gin_dir}/sizes/small.gin'])
  window = model.window_length
  rng = np.random.default_rng(SEED)
  tokens = jnp.asarray(rng.integers(0, model.vocab_size, (LANES, WINDOWS * window)), jnp.int32)
  doc_start = np.zeros((LANES, WINDOWS), bool)
  doc_start[:, 0] = True
  doc_start[0, 2] = True
  doc_start = jnp.asarray(doc_start)
  memory = model.init_memory(LANES)
  params = nn.meta.unbox(model.init(jax.random.PRNGKey(SEED), tokens, memory, doc_start))['params']
  if given is not None:
    prefix = f'{kind}/params/'
    params = _unflatten_like(params, {k[len(prefix):]: v for k, v in given.items()
                                      if k.startswith(prefix)})

  def loss_fn(p):
    logits, _ = model.apply({'params': p}, tokens, memory, doc_start)
    logp = jax.nn.log_softmax(logits[:, :-1], axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)), logits

  (loss, logits), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(params)
  stepped = jax.tree.map(lambda p, g: p - LEARNING_RATE * g, params, grads)
  loss_after, _ = jax.jit(loss_fn)(stepped)
  out = {f'{kind}/logits': np.asarray(logits), f'{kind}/loss': np.asarray(loss),
         f'{kind}/loss_after_step': np.asarray(loss_after)}
  out.update({f'{kind}/params/{k}': v for k, v in _flatten(params).items()})
  return out


def main(argv: list[str]) -> None:
  out_path, kinds, gin_dir = argv[1], argv[2].split(','), argv[3]
  given = dict(np.load(argv[4])) if len(argv) > 4 else None
  results = {}
  for kind in kinds:
    try:
      results.update(measure(kind, gin_dir, given))
    except Exception as e:  # pylint: disable=broad-exception-caught
      first = (str(e).strip().splitlines() or [''])[0]
      results[f'{kind}/error'] = np.asarray(f'{type(e).__name__}: {first}')
  np.savez(out_path, **results)


if __name__ == '__main__':
  main(sys.argv)
