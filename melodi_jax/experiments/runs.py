"""A finished training run, restored for measuring: its model (from the run's operative
config.gin), parameters, TrainConfig and step; plus the model's size and memory footprint."""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import numpy as np

from melodi_jax.errors import UserError
from melodi_jax.models import footprint


@dataclasses.dataclass
class Run:
  workdir: str
  model: Any                  # models.DecoderLM
  params: Any                 # restored parameters (unboxed)
  train_config: Any           # train.config.TrainConfig
  step: int
  mesh: Any
  params_sharding: Any


def restore(workdir: str, step: int | None = None, batch_size: int | None = None) -> Run:
  """Restores the params of DIR's checkpoint `step` (default: the latest) onto this host."""
  from melodi_jax.train import checkpoints, cli, partitioning  # pylint: disable=g-import-not-at-top

  workdir = os.path.abspath(workdir)
  model, train_config = cli.build_run_model(workdir)
  mesh = partitioning.make_mesh((-1, 1))
  rules = (tuple(train_config.axis_rules) if train_config.axis_rules
           else partitioning.default_rules())
  params_sharding, abstract = partitioning.restorable_params(
      model, batch_size or train_config.eval_batch, train_config.segment_length, mesh, rules)
  checkpointer = checkpoints.Checkpointer(workdir, read_only=True)
  restored = checkpointer.restore({'params': abstract}, step=step)
  checkpointer.close()
  if restored is None:
    raise UserError(f'no checkpoint in {checkpointer.directory}; train first')
  return Run(workdir, model, restored.params, train_config, int(restored.step), mesh,
             params_sharding)


def without_cross(params: Any) -> Any:
  """params with every `gate_logit` (the self/cross gate of Attention) at +30: gate 1, cross 0,
  so every gated memory read (MELODI long-term, Memorizing kNN, Block-Recurrent states) is off
  and those layers attend to themselves only."""
  return jax.tree_util.tree_map_with_path(
      lambda path, leaf: leaf * 0 + 30.0 if 'gate_logit' in jax.tree_util.keystr(path) else leaf,
      params)


def count_params(params: Any) -> int:
  return int(sum(np.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(params)))


def memory_floats_per_lane(model) -> dict[str, Any]:
  """Float elements per lane of the carried memory, as the paper counts (bool/int bookkeeping
  such as validity masks left out): `jax.eval_shape(model.init_memory)`, no allocation."""
  measured = footprint.measure_model(model, 'run')
  return {'floats': measured.paper_floats, 'parts': measured.paper_parts,
          'source': 'melodi_jax.footprint'}
