"""Tiny model configurations every model-level test runs over, and helpers to run them."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from melodi_jax import models
from melodi_jax.errors import UserError

TINY = 'sizes/tiny.gin'
MEMORIZING = ['MemorizingStack.memory_layer = 1',
              'MemorizingStack.memory_slots = 24']  # 3 windows of memory: the ring wraps in tests
# name -> (gin files, bindings). Every memory kind adds its tiny config here.
CONFIGS = {
    'melodi': (['models/melodi.gin', TINY], []),
    'melodi_short_only': (['models/melodi.gin', TINY], ['MelodiStack.long_term_layers = ()']),
    'melodi_long_only': (['models/melodi.gin', TINY], ['MelodiStack.short_term_slots = 0']),
    'melodi_unmixed_summaries': (['models/melodi.gin', TINY], ['MelodiStack.mix_summaries = False']),
    'vanilla': (['models/vanilla.gin', TINY], []),
    'transformer_xl': (['models/transformer_xl.gin', TINY], []),
    # (top_k is bound here, not in MEMORIZING: a binding after memorizing_dense.gin would turn
    # the dense lookup back into top-k)
    'memorizing': (['models/memorizing.gin', TINY], MEMORIZING + ['MemorizingStack.top_k = 4']),
    'memorizing_dense': (['models/memorizing_dense.gin', TINY], MEMORIZING),
    'block_recurrent': (['models/block_recurrent.gin', TINY],
                        ['BlockRecurrentStack.num_states = 4']),
    'memlong': (['models/memlong.gin', TINY],
                ['MemLongStack.memory_layer = 0', 'MemLongStack.chunks = 3',
                 'MemLongStack.top_k = 1']),
}
# Configs whose memory reaches across windows (the gradient probe must see it).
WITH_MEMORY = [name for name in CONFIGS if name != 'vanilla']


@functools.lru_cache(maxsize=None)
def build(name: str, extra_bindings: tuple = ()) -> models.DecoderLM:
  files, bindings = CONFIGS[name]
  return models.build(files, list(bindings) + list(extra_bindings))


# Donors: a config's initial parameters are, bit for bit, its donor's at the same paths (flax
# draws a parameter from its module path, so a config that adds or leaves out modules changes
# no other parameter; checked against each config's own initialisation when this was written).
# One compiled initialisation, the costliest compile of most model tests, then serves the donor
# and its recipients. A recipient whose tree is not inside its donor's (path, shape and dtype,
# checked at first use) is initialised itself.
DONORS = {'melodi_short_only': 'melodi', 'melodi_long_only': 'melodi',
          'melodi_unmixed_summaries': 'melodi', 'transformer_xl': 'memorizing',
          'vanilla': 'memorizing', 'memlong': 'memorizing', 'memorizing_dense': 'memorizing'}


def _init_args(model, batch: int):
  return (jnp.zeros((batch, model.window_length), jnp.int32), model.init_memory(batch),
          jnp.ones((batch, 1), bool))


def params(name: str, extra_bindings: tuple = (), batch: int = 2, seed: int = 0):
  """Unboxed float32 parameters of the tiny model (initialised with jit, cached)."""
  donor = DONORS.get(name) if not extra_bindings else None
  given = _from_donor(name, donor, batch, seed) if donor else None
  return given if given is not None else _params(name, tuple(extra_bindings), batch, seed)


@functools.lru_cache(maxsize=None)
def _from_donor(name: str, donor: str, batch: int, seed: int):
  """`name`'s parameter tree filled from `donor`'s parameters; None if it does not fit."""
  model = build(name)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(seed), *_init_args(model, batch))
  return fill_from(donor, nn.meta.unbox(shapes), seed)


def fill_from(donor: str, shapes, seed: int = 0):
  """A tree of `shapes` (jax.ShapeDtypeStruct leaves) filled with the initial parameters of zoo
  config `donor` at the same paths; None unless every path is there with its shape and dtype."""
  source = {jax.tree_util.keystr(path): leaf for path, leaf in
            jax.tree_util.tree_leaves_with_path(_params(donor, (), 2, seed))}
  fits = all(
      (key := jax.tree_util.keystr(path)) in source
      and (source[key].shape, source[key].dtype) == (leaf.shape, leaf.dtype)
      for path, leaf in jax.tree_util.tree_leaves_with_path(shapes))
  if not fits:
    return None
  return jax.tree_util.tree_map_with_path(
      lambda path, _: source[jax.tree_util.keystr(path)], shapes)


@functools.lru_cache(maxsize=None)
def _params(name: str, extra_bindings: tuple, batch: int, seed: int):
  model = build(name, extra_bindings)
  variables = jax.jit(model.init)(jax.random.PRNGKey(seed), *_init_args(model, batch))
  return nn.meta.unbox(variables)


@functools.lru_cache(maxsize=None)
def jitted_apply(model):
  """One compiled apply per model (jax.jit of a fresh bound method would compile again)."""
  return jax.jit(model.apply)


def random_tokens(batch: int, length: int, seed: int = 0, vocab: int = 256) -> jax.Array:
  return jnp.asarray(np.random.RandomState(seed).randint(0, vocab, (batch, length)), jnp.int32)


def doc_starts(batch: int, num_windows: int, first: bool = True) -> jax.Array:
  return jnp.zeros((batch, num_windows), bool).at[:, 0].set(first)


def run_segments(model, variables, segments, memory=None, doc_start=None):
  """Applies `model` segment after segment, carrying memory; returns the concatenated logits.

  segments: list of int32[B, T]; doc_start: list of bool[B, N] (default: a start only at the
  very first window). Returns (float32[B, sum T, V], final memory).
  """
  apply = jitted_apply(model)
  batch = segments[0].shape[0]
  memory = model.init_memory(batch) if memory is None else memory
  outputs = []
  for i, tokens in enumerate(segments):
    n = tokens.shape[1] // model.window_length
    starts = doc_start[i] if doc_start is not None else doc_starts(batch, n, first=(i == 0))
    logits, memory = apply(variables, tokens, memory, starts)
    outputs.append(logits)
  return jnp.concatenate(outputs, axis=1), memory


def floats_per_lane(gin_file: str) -> int:
  """Float elements of the memory pytree per lane of a (paper-size) config, nothing allocated."""
  model = models.build([gin_file])
  memory = jax.eval_shape(lambda: model.init_memory(2))
  return sum(leaf.size for leaf in jax.tree_util.tree_leaves(memory)
             if jnp.issubdtype(leaf.dtype, jnp.floating)) // 2


def assert_config_error(name: str, binding: str, needle: str) -> None:
  """Building config `name` with one more gin binding fails at build time, naming `needle`."""
  import pytest
  files, bindings = CONFIGS[name]
  with pytest.raises(UserError, match=needle):
    models.build(files, list(bindings) + [binding])
