"""FLOP counting that sees through scans, and the machine's measured matmul roofline.

XLA's compiled cost analysis counts the body of a while loop once, whatever its trip count (see
`xla_flops`), so for the window scan it under-counts by N. `matmul_flops` walks the jaxpr instead
and multiplies every scan body by its length; it counts dot products only (2 * M * N * K each),
which is the work the matmul roofline measures.
"""

import statistics
import time

import jax
import jax.numpy as jnp
from jax.extend import core as jex_core


def _dot_flops(eqn) -> float:
  (lhs_contract, _), _ = eqn.params['dimension_numbers']
  lhs = eqn.invars[0].aval.shape
  contracted = 1
  for axis in lhs_contract:
    contracted *= lhs[axis]
  out = eqn.outvars[0].aval
  return 2.0 * out.size * contracted


def _sub_jaxprs(eqn):
  for value in eqn.params.values():
    for item in (value if isinstance(value, (tuple, list)) else (value,)):
      if isinstance(item, jex_core.ClosedJaxpr):
        yield item.jaxpr
      elif isinstance(item, jex_core.Jaxpr):
        yield item


def _jaxpr_flops(jaxpr) -> float:
  total = 0.0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == 'dot_general':
      total += _dot_flops(eqn)
    elif name == 'scan':
      total += eqn.params['length'] * _jaxpr_flops(eqn.params['jaxpr'].jaxpr)
    elif name == 'cond':
      total += max(_jaxpr_flops(b.jaxpr) for b in eqn.params['branches'])
    else:
      total += sum(_jaxpr_flops(sub) for sub in _sub_jaxprs(eqn))
  return total


def matmul_flops(fn, *args, **kwargs) -> float:
  """Dot-product FLOPs of one call of fn(*args) (abstract: nothing runs), scans unrolled."""
  closed = jax.make_jaxpr(fn)(*args, **kwargs)
  return _jaxpr_flops(closed.jaxpr)


def xla_flops(compiled) -> float | None:
  """'flops' of a compiled executable's cost analysis (dict or list of dicts, by jax version)."""
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else None
  if not analysis:
    return None
  return float(analysis.get('flops', 0.0)) or None


class Roofline:
  """Dense-matmul FLOP/s of this machine at `dtype`: one [n, n] @ [n, n], timed in wall-clock and
  in process CPU seconds. n defaults to 2048 on CPU (a few hundred ms on two cores) and 8192 on
  accelerators. `probe()` times one more product, to interleave with the steps of a benchmark on a
  machine whose load changes."""

  def __init__(self, dtype: jnp.dtype, size: int | None = None):
    if size is None:
      size = 2048 if jax.default_backend() == 'cpu' else 8192
    keys = jax.random.split(jax.random.PRNGKey(0))
    self.size, self.dtype = size, jnp.dtype(dtype)
    self.flops = 2.0 * size ** 3
    self._a = jax.random.normal(keys[0], (size, size), jnp.float32).astype(dtype)
    self._b = jax.random.normal(keys[1], (size, size), jnp.float32).astype(dtype)
    self._dot = jax.jit(jnp.dot)
    self._dot(self._a, self._b).block_until_ready()

  def probe(self) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one product."""
    wall, cpu = time.perf_counter(), time.process_time()
    self._dot(self._a, self._b).block_until_ready()
    return time.perf_counter() - wall, time.process_time() - cpu

  def measure(self, repeats: int = 7) -> dict:
    probes = [self.probe() for _ in range(repeats)]
    wall = statistics.median(p[0] for p in probes)
    cpu = statistics.median(p[1] for p in probes)
    return {'dtype': self.dtype.name, 'size': self.size, 'seconds': wall, 'cpu_seconds': cpu,
            'flops_per_s': self.flops / wall,
            'best_flops_per_s': self.flops / min(p[0] for p in probes),
            'flops_per_cpu_s': self.flops / cpu}
