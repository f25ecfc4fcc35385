"""What a model keeps per sequence (lane) between windows, read off its own memory pytree
(`jax.eval_shape(model.init_memory)`, no allocation); melodi_jax/footprint.py prints it."""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from melodi_jax.models.decoder import DecoderLM

PROBE_BATCH = 2                 # lanes in the abstract memory; every leaf must lead with it


@dataclasses.dataclass(frozen=True)
class Leaf:
  """One leaf of the memory pytree, per lane."""
  path: str
  shape: tuple[int, ...]   # without the leading B
  dtype: str
  bookkeeping: bool        # bool/int: masks and counters, not counted as the paper counts

  @property
  def elements(self) -> int:
    return int(np.prod(self.shape, dtype=np.int64))

  @property
  def bytes(self) -> int:
    return self.elements * np.dtype(self.dtype).itemsize


@dataclasses.dataclass(frozen=True)
class Footprint:
  """What one model keeps per sequence (lane) between windows."""
  name: str
  leaves: tuple[Leaf, ...]

  @property
  def paper_floats(self) -> int:
    return sum(leaf.elements for leaf in self.leaves if not leaf.bookkeeping)

  @property
  def paper_parts(self) -> dict[str, int]:
    """Float elements per memory kind (the pytree key above the leaf, e.g. 'short_term')."""
    parts: dict[str, int] = {}
    for leaf in self.leaves:
      if not leaf.bookkeeping:
        part = _part_name(leaf.path)
        parts[part] = parts.get(part, 0) + leaf.elements
    return parts

  @property
  def parts_summed(self) -> float:
    """Every part rounded to 0.1M floats, then added (how the paper's table adds up), in M."""
    return sum(round(n / 1e5) for n in self.paper_parts.values()) / 10

  @property
  def stored_bytes(self) -> dict[str, int]:
    """Bytes per lane by dtype, bookkeeping included."""
    by_dtype: dict[str, int] = {}
    for leaf in self.leaves:
      by_dtype[leaf.dtype] = by_dtype.get(leaf.dtype, 0) + leaf.bytes
    return dict(sorted(by_dtype.items()))

  @property
  def stored_total(self) -> int:
    return sum(self.stored_bytes.values())

  def to_json(self) -> dict:
    return {'name': self.name, 'paper_floats': self.paper_floats,
            'paper_floats_printed': millions(self.paper_floats),
            'parts_summed_printed': f'{self.parts_summed:.1f}M',
            'paper_parts': self.paper_parts, 'stored_bytes_by_dtype': self.stored_bytes,
            'stored_bytes': self.stored_total,
            'leaves': [dataclasses.asdict(leaf) for leaf in self.leaves]}


def _part_name(path: str) -> str:
  keys = path.split('/')
  return keys[-2] if len(keys) >= 2 else keys[-1]


def _key_name(key) -> str:
  for attribute in ('key', 'name', 'idx'):
    if hasattr(key, attribute):
      return str(getattr(key, attribute))
  return str(key)


def measure_model(model: DecoderLM, name: str) -> Footprint:
  """The footprint of `model` from the shapes of `init_memory` (jax.eval_shape: no allocation)."""
  abstract = jax.eval_shape(functools.partial(model.init_memory, PROBE_BATCH))
  leaves = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(abstract)[0]:
    path_name = '/'.join(_key_name(k) for k in path)
    assert leaf.shape[:1] == (PROBE_BATCH,), (
        f'memory leaf {path_name} has shape {leaf.shape}; every leaf must be [B, ...] with '
        f'B = {PROBE_BATCH}')
    dtype = jnp.dtype(leaf.dtype)
    leaves.append(Leaf(path_name, tuple(int(s) for s in leaf.shape[1:]), dtype.name,
                       bookkeeping=not jnp.issubdtype(dtype, jnp.floating)))
  return Footprint(name, tuple(leaves))


def millions(count: int) -> str:
  """Float count as the paper prints it: millions with one decimal (18481152 -> '18.5M')."""
  return f'{count / 1e6:.1f}M'
