"""Warm start: a new run begins from the parameters of another run's checkpoint, of any model kind.

Parameters are matched by name (their path in the params tree) and shape: matches are loaded
bit for bit, the rest of this model is initialised fresh, and the source's leftovers are ignored;
all three lists are logged and written to DIR/warm_start.json. `freeze_loaded` keeps the loaded
parameters fixed for the first K steps (optax masking), so the new parts settle in first.
E.g. the vanilla transformer's layers load into MELODI; its mixers, summary tokens and long-term
gate start fresh.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, NamedTuple

from absl import logging
import jax
import jax.numpy as jnp
import optax

from melodi_jax.errors import UserError
from melodi_jax.train import checkpoints


@dataclasses.dataclass(frozen=True)
class WarmStartPlan:
  """Which parameters come from the source. Names are '/'-joined param paths."""
  source: str                                # the source run's checkpoints folder
  step: int
  loaded: tuple[str, ...]                    # same name and shape in both
  created: tuple[str, ...]                   # only here (or another shape there): fresh init
  ignored: tuple[str, ...]                   # only in the source (or another shape here)

  def summary(self) -> dict:
    return dataclasses.asdict(self)


def _name(path) -> str:
  return '/'.join(str(getattr(entry, 'key', getattr(entry, 'name', entry))) for entry in path)


def _flat_shapes(tree) -> dict[str, tuple[tuple[int, ...], Any]]:
  return {_name(path): (tuple(leaf.shape), jnp.dtype(leaf.dtype))
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def locate(init_from: str, step: int | None = None) -> tuple[str, int]:
  """(workdir, step) of `init_from`: a run folder, its checkpoints/ folder or one step folder."""
  path = os.path.abspath(init_from)
  if os.path.basename(path).isdigit() and step is None:
    path, step = os.path.dirname(path), int(os.path.basename(path))
  if os.path.basename(path) == 'checkpoints':
    path = os.path.dirname(path)
  if not os.path.isdir(checkpoints.checkpoint_dir(path)):
    raise UserError(f'--init_from={init_from}: no checkpoints there; pass the folder of a '
                    'training run (or its checkpoints/ or checkpoints/<step> folder)')
  checkpointer = checkpoints.Checkpointer(path, read_only=True)
  steps = checkpointer.steps
  checkpointer.close()
  if not steps:
    raise UserError(f'--init_from={init_from}: the run has no checkpoint yet; train it first')
  if step is None:
    step = steps[-1]
  elif step not in steps:
    raise UserError(f'--init_from={init_from}: no checkpoint for step {step}; saved: {steps}')
  return path, step


def plan(init_from: str, abstract_params: Any, step: int | None = None) -> WarmStartPlan:
  """Matches this run's parameters (a tree of arrays or ShapeDtypeStructs) with the source's."""
  workdir, step = locate(init_from, step)
  checkpointer = checkpoints.Checkpointer(workdir, read_only=True)
  source = _flat_shapes(checkpointer.manager.item_metadata(step)['params'])
  checkpointer.close()
  target = _flat_shapes(abstract_params)
  loaded = tuple(sorted(n for n in target if source.get(n) == target[n]))
  created = tuple(sorted(set(target) - set(loaded)))
  ignored = tuple(sorted(set(source) - set(loaded)))
  return WarmStartPlan(checkpoints.checkpoint_dir(workdir), step, loaded, created, ignored)


def log_plan(warm: WarmStartPlan, target_shapes: Any, workdir: str | None = None) -> None:
  """Logs every loaded, created and ignored parameter (once, at build time); with a workdir,
  writes the lists to DIR/warm_start.json."""
  shapes = {k: v[0] for k, v in _flat_shapes(target_shapes).items()}
  logging.info('warm start from %s step %d: %d parameters loaded, %d created, %d ignored',
               warm.source, warm.step, len(warm.loaded), len(warm.created), len(warm.ignored))
  for kind in ('loaded', 'created', 'ignored'):
    for name in getattr(warm, kind):
      logging.info('warm start: %s %s %s', kind, name, shapes.get(name, ''))
  if workdir and jax.process_index() == 0:
    with open(os.path.join(workdir, 'warm_start.json'), 'w', encoding='utf-8') as f:
      json.dump(warm.summary(), f, indent=1)


def load(params: Any, warm: WarmStartPlan) -> Any:
  """`params` (freshly initialised, with their shardings) with the loaded ones replaced by the
  source's values, bit for bit, placed with the same shardings."""
  flat = {_name(path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(params)}
  loaded = set(warm.loaded)
  checkpointer = checkpoints.Checkpointer(os.path.dirname(warm.source), read_only=True)
  metadata = checkpointer.manager.item_metadata(warm.step)['params']

  def abstract(path, leaf):  # source arrays, placed like the parameter they replace
    name = _name(path)
    like = flat.get(name) if name in loaded else None
    sharding = getattr(like, 'sharding', None) or jax.sharding.SingleDeviceSharding(
        jax.local_devices()[0])
    return jax.ShapeDtypeStruct(tuple(leaf.shape), leaf.dtype, sharding=sharding)

  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  target = jax.tree_util.tree_map_with_path(abstract, metadata)
  restored = checkpointer.manager.restore(
      warm.step, args=ocp.args.Composite(params=ocp.args.StandardRestore(target)))['params']
  checkpointer.close()
  source = {_name(path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(restored)}
  return jax.tree_util.tree_map_with_path(
      lambda path, leaf: source[_name(path)] if _name(path) in loaded else leaf, params)


def loaded_mask(params: Any, warm: WarmStartPlan) -> Any:
  """The params tree with True where the parameter was loaded."""
  loaded = set(warm.loaded)
  return jax.tree_util.tree_map_with_path(lambda path, _: _name(path) in loaded, params)


class FreezeState(NamedTuple):
  count: jax.Array      # int32[]: updates made so far
  inner: Any


def freeze_loaded(optimizer: optax.GradientTransformation, mask: Any,
                  steps: int) -> optax.GradientTransformation:
  """`optimizer`, except that parameters where `mask` is True get zero gradients and zero updates
  (they keep their values bit for bit) during the first `steps` updates."""
  if steps <= 0:
    return optimizer

  def freeze(tree, frozen):
    return jax.tree.map(lambda u, m: jnp.where(frozen & m, jnp.zeros_like(u), u), tree, mask)

  def init(params):
    return FreezeState(jnp.zeros((), jnp.int32), optimizer.init(params))

  def update(updates, state, params=None):
    frozen = state.count < steps
    updates, inner = optimizer.update(freeze(updates, frozen), state.inner, params)
    return freeze(updates, frozen), FreezeState(state.count + 1, inner)

  return optax.GradientTransformation(init, update)
