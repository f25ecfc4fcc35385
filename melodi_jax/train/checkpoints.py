"""Orbax checkpoints of a run: params, optimizer state, carried memory, and a JSON `progress`
item (step, rng, the lane state, the same for every process), so a resumed run continues
bit-identically, under any number of processes.

Layout: DIR/checkpoints/<step>/{params,opt_state,memory,progress}. Restoring takes abstract
targets with shardings, so a checkpoint written on one mesh restores onto another.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

from absl import logging
import jax
import orbax.checkpoint as ocp

from melodi_jax.errors import UserError

ARRAY_ITEMS = ('params', 'opt_state', 'memory')
ITEMS = ARRAY_ITEMS + ('progress',)
_ARRAY_HANDLER_SET = False


@dataclasses.dataclass
class Restored:
  """What a checkpoint holds; `progress` is the JSON item (step, rng, lane_state, ...)."""
  step: int
  params: Any
  opt_state: Any = None
  memory: Any = None
  progress: dict = dataclasses.field(default_factory=dict)


def _shapes(tree) -> dict[str, tuple[int, ...]]:
  return {jax.tree_util.keystr(path): tuple(leaf.shape)
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def _mismatch(abstract: Any, metadata: Any) -> str | None:
  """Where the saved arrays' shapes differ from this run's, e.g. "['embed'] (256, 32) vs (512,
  32)"; None when they fit. Trees whose paths are spelled differently (optax named tuples) are
  compared by their shapes in order."""
  if metadata is None:
    raise ValueError('no metadata')
  want, have = _shapes(abstract), _shapes(metadata)
  if want.keys() == have.keys():
    for path, shape in want.items():
      if have[path] != shape:
        return f'{path}: {have[path]} saved, {shape} here'
    return None
  if sorted(want.values()) != sorted(have.values()):
    missing = sorted(set(want) - set(have))[:1] or sorted(set(have) - set(want))[:1]
    return f': {len(have)} arrays saved, {len(want)} here (e.g. {missing[0] if missing else "?"})'
  return None


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(workdir, 'checkpoints')


@dataclasses.dataclass
class _KeepSteps:
  """orbax preservation policy: keeps the listed steps beyond keep-N (the last checkpoint before
  a collapse, train/collapse.py). The set may grow while the manager is open."""
  steps: set[int]

  def should_preserve(self, checkpoints, *, context) -> list[bool]:
    del context
    return [checkpoint.step in self.steps for checkpoint in checkpoints]


class Checkpointer:
  """A thin layer over `ocp.CheckpointManager`: async saves, keep-N, restore with fallback."""

  def __init__(self, workdir: str, keep: int = 3, *, read_only: bool = False):
    # Replica-parallel saving jits a slicing function per distinct (shape, sharding) at the
    # first save: minutes of compilation for a model with hundreds of parameters, to split
    # writes that are small next to a training run. One replica writes each shard instead.
    global _ARRAY_HANDLER_SET
    if not _ARRAY_HANDLER_SET:
      ocp.type_handlers.register_type_handler(
          jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False), override=True)
      _ARRAY_HANDLER_SET = True
    self.directory = checkpoint_dir(workdir)
    self.read_only = read_only
    if read_only and not os.path.isdir(self.directory):
      raise UserError(f'no checkpoints in {self.directory}; train first or pass the --workdir '
                      'of a training run')
    self._kept_steps = set()
    preservation = None if read_only else ocp.checkpoint_managers.AnyPreservationPolicy(
        [ocp.checkpoint_managers.LatestN(n=keep), _KeepSteps(self._kept_steps)])
    options = ocp.CheckpointManagerOptions(
        create=not read_only, read_only=read_only, enable_async_checkpointing=not read_only,
        preservation_policy=preservation)
    handlers = {name: ocp.StandardCheckpointHandler() for name in ARRAY_ITEMS}
    handlers['progress'] = ocp.JsonCheckpointHandler()
    self.manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)

  @property
  def steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def progress(self, step: int) -> dict:
    """The JSON progress item of checkpoint `step` alone (no array is read)."""
    restored = self.manager.restore(
        step, args=ocp.args.Composite(progress=ocp.args.JsonRestore()))
    return dict(restored['progress'])

  def keep(self, step: int):
    """Keeps checkpoint `step` on disk whatever `keep` says (newer saves no longer remove it)."""
    self._kept_steps.add(step)

  def save(self, step: int, *, params, opt_state, memory, progress: dict) -> bool:
    """Starts an async save (arrays are copied off the device before this returns, so the caller
    may donate them right after). Returns False when `step` is already saved."""
    if step in self.manager.all_steps():
      return False
    args = ocp.args.Composite(
        params=ocp.args.StandardSave(params), opt_state=ocp.args.StandardSave(opt_state),
        memory=ocp.args.StandardSave(memory), progress=ocp.args.JsonSave(progress))
    self.manager.save(step, args=args, force=True)
    return True

  def restore(self, abstract: dict[str, Any], step: int | None = None) -> Restored | None:
    """Restores the items named in `abstract` (a subset of params/opt_state/memory; values are
    trees of `jax.ShapeDtypeStruct` with shardings) plus progress, from `step` or the latest.

    A latest checkpoint that cannot be read is reported, moved aside (renamed `<step>.corrupt`)
    and the one before is tried. Returns None when there is no checkpoint.
    """
    if step is not None:
      if step not in self.manager.all_steps():
        raise UserError(f'no checkpoint for step {step} in {self.directory}; saved steps: '
                        f'{self.steps}')
      return self._restore_step(step, abstract)
    errors = []
    for candidate in reversed(self.steps):
      try:
        return self._restore_step(candidate, abstract)
      except UserError:
        raise
      except Exception as e:  # pylint: disable=broad-exception-caught
        message = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
        errors.append(f'step {candidate}: {message}')
        logging.warning('checkpoint at step %d in %s cannot be restored (%s: %s); falling back '
                        'to the one before', candidate, self.directory, type(e).__name__, message)
        self._move_aside(candidate)
    if errors:
      raise UserError(f'no checkpoint in {self.directory} can be restored ({errors[-1]}); the '
                      'model or batch size may differ from the run that wrote them')
    return None

  def _restore_step(self, step: int, abstract: dict[str, Any]) -> Restored:
    metadata = self.manager.item_metadata(step)
    for name, tree in abstract.items():
      mismatch = _mismatch(tree, metadata[name])
      if mismatch:  # a readable checkpoint of another configuration: never "fall back" here
        raise UserError(f'checkpoint at step {step} in {self.directory} does not fit this run '
                        f'({name}{mismatch}); resume with the gin config it was trained with '
                        '(config.gin in the workdir) or pass a new --workdir')
    args = {name: ocp.args.StandardRestore(tree) for name, tree in abstract.items()}
    args['progress'] = ocp.args.JsonRestore()
    restored = self.manager.restore(step, args=ocp.args.Composite(**args))
    jax.block_until_ready([restored[name] for name in abstract])
    return Restored(step=step, progress=dict(restored['progress']),
                    **{name: restored[name] for name in abstract})

  def _move_aside(self, step: int):
    if self.read_only:
      return
    self.manager.wait_until_finished()
    source = os.path.join(self.directory, str(step))
    if jax.process_index() == 0 and os.path.isdir(source):
      target = f'{source}.corrupt'
      suffix = 1
      while os.path.exists(target):
        target, suffix = f'{source}.corrupt{suffix}', suffix + 1
      os.rename(source, target)
      logging.warning('moved the unreadable checkpoint to %s', target)
    self.manager.reload()

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.close()
