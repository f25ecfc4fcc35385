"""Mesh, logical-axis rules and shardings: where logical names meet the ('data', 'model') mesh.

Modules name their axes with `melodi_jax.layers.axes`; this module maps those names to mesh axes
with (gin-configurable) rules and hands `jax.jit` the shardings of every array the trainer moves.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from absl import logging
import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from melodi_jax.errors import UserError

DATA = 'data'
MODEL = 'model'
MESH_AXES = (DATA, MODEL)

Rules = Sequence[tuple[str, str | None]]


def default_rules() -> tuple[tuple[str, str | None], ...]:
  """The model package's rules (`layers/axes.py`): batch on 'data', wide axes on 'model'."""
  from melodi_jax.layers import axes  # pylint: disable=g-import-not-at-top
  return tuple(axes.DEFAULT_RULES)


def make_mesh(mesh_shape: Sequence[int] = (-1, 1)) -> Mesh:
  """A ('data', 'model') mesh over every device; -1 in `mesh_shape` takes the devices left over."""
  num_devices = jax.device_count()
  shape = list(mesh_shape)
  if len(shape) != 2 or shape.count(-1) > 1 or any(s == 0 or s < -1 for s in shape):
    raise UserError(f'TrainConfig.mesh_shape={tuple(mesh_shape)} is not (data, model) with '
                    'positive sizes and at most one -1; e.g. set it to (-1, 1)')
  if -1 in shape:
    known = int(np.prod([s for s in shape if s != -1]))
    if num_devices % known:
      raise UserError(f'TrainConfig.mesh_shape={tuple(mesh_shape)} does not divide the '
                      f'{num_devices} devices; pick sizes whose product divides {num_devices}')
    shape[shape.index(-1)] = num_devices // known
  needed = shape[0] * shape[1]
  devices = None
  if needed < num_devices and jax.process_count() == 1:
    # One process may run on fewer devices than it sees (one GPU of eight, a 1x1 test mesh).
    logging.warning('mesh %s uses %d of the %d devices', tuple(shape), needed, num_devices)
    devices = jax.devices()[:needed]
  elif needed != num_devices:
    raise UserError(f'TrainConfig.mesh_shape={tuple(mesh_shape)} needs {needed} devices but '
                    f'{num_devices} are visible; use -1 for the data axis')
  auto = jax.sharding.AxisType.Auto
  return jax.make_mesh(tuple(shape), MESH_AXES, axis_types=(auto, auto), devices=devices)


def _mesh_spec(names: Sequence[str | None], shape: Sequence[int], mesh: Mesh,
               rules: Rules) -> PartitionSpec:
  """Maps one array's logical axis names to mesh axes; a mesh axis that does not divide the
  dimension (or is already used by an earlier dimension) leaves that dimension replicated."""
  used, spec = set(), []
  for name, size in zip(names, shape):
    axis = None
    for logical, mesh_axis in rules:
      if logical == name and name is not None:
        if mesh_axis is not None and mesh_axis not in used and size % mesh.shape[mesh_axis] == 0:
          axis = mesh_axis
        break
    if axis is not None and mesh.shape[axis] > 1:
      used.add(axis)
      spec.append(axis)
    else:
      spec.append(None)
  return PartitionSpec(*spec)


def logical_shardings(boxed_abstract: Any, mesh: Mesh, rules: Rules) -> Any:
  """Shardings for a tree whose leaves may be boxed with flax logical-axis metadata.

  Returns the tree of `NamedSharding`s for the *unboxed* tree (`nn.meta.unbox`); leaves without
  names (small tables) are replicated.
  """
  def leaf(x):
    if isinstance(x, nn.LogicallyPartitioned):
      return NamedSharding(mesh, _mesh_spec(x.names, x.value.shape, mesh, rules))
    if isinstance(x, nn.Partitioned):  # already mesh axes
      return NamedSharding(mesh, PartitionSpec(*x.names))
    return NamedSharding(mesh, PartitionSpec())
  return jax.tree.map(leaf, boxed_abstract,
                      is_leaf=lambda x: isinstance(x, (nn.LogicallyPartitioned, nn.Partitioned)))


def restorable_params(model, batch_size: int, segment_length: int, mesh: Mesh,
                      rules: Rules) -> tuple[Any, Any]:
  """(shardings, abstract params) of `model` for restoring a checkpoint straight onto `mesh`:
  jax.eval_shape of model.init on a [batch_size, segment_length] segment (nothing allocated);
  the abstract leaves are jax.ShapeDtypeStructs that carry their sharding."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  windows = segment_length // model.window_length
  boxed = jax.eval_shape(
      lambda rng: model.init(rng, jnp.zeros((batch_size, segment_length), jnp.int32),
                             model.init_memory(batch_size),
                             jnp.ones((batch_size, windows), bool))['params'],
      jax.random.key(0))
  shardings = logical_shardings(boxed, mesh, rules)
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          nn.meta.unbox(boxed), shardings)
  return shardings, abstract


def like_param_shardings(abstract_tree: Any, params_abstract: Any, params_shardings: Any,
                         mesh: Mesh) -> Any:
  """Shardings for optimizer state: a leaf whose tree path ends with a parameter's path and whose
  shape equals that parameter's takes its sharding; anything else (counts, Adafactor's factored
  row/column statistics) is replicated."""
  by_path = {}
  for (path, shape_dtype), (_, sharding) in zip(
      jax.tree_util.tree_leaves_with_path(params_abstract),
      jax.tree_util.tree_leaves_with_path(params_shardings)):
    by_path[tuple(path)] = (tuple(shape_dtype.shape), sharding)
  replicated = NamedSharding(mesh, PartitionSpec())

  def leaf(path, x):
    path = tuple(path)
    for start in range(len(path)):
      hit = by_path.get(path[start:])
      if hit is not None:
        return hit[1] if hit[0] == tuple(x.shape) else replicated
    return replicated
  return jax.tree_util.tree_map_with_path(leaf, abstract_tree)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch/lane) axis on 'data', everything else replicated."""
  return NamedSharding(mesh, PartitionSpec(DATA))


def check_batch_divides(batch_size: int, mesh: Mesh, what: str = 'TrainConfig.batch_size'):
  data = mesh.shape[DATA]
  if batch_size % data or batch_size % jax.process_count():
    raise UserError(f'{what}={batch_size} must be a multiple of the mesh data axis ({data}) and '
                    f'of the process count ({jax.process_count()}); change {what} or mesh_shape')


def lane_shardings(abstract_tree: Any, mesh: Mesh) -> Any:
  """Every leaf of a lane-major pytree ([B, ...]: batches, memory) sharded on 'data'."""
  sharding = batch_sharding(mesh)
  return jax.tree.map(lambda _: sharding, abstract_tree)
