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


def measure_roofline(dtype: jnp.dtype, size: int | None = None, repeats: int = 7) -> dict:
  """Dense-matmul FLOP/s of this machine at `dtype`: median over `repeats` of one [n, n] @ [n, n].

  n defaults to 2048 on CPU (a few hundred ms on two cores) and 8192 on accelerators.
  """
  if size is None:
    size = 2048 if jax.default_backend() == 'cpu' else 8192
  keys = jax.random.split(jax.random.PRNGKey(0))
  a = jax.random.normal(keys[0], (size, size), jnp.float32).astype(dtype)
  b = jax.random.normal(keys[1], (size, size), jnp.float32).astype(dtype)
  dot = jax.jit(jnp.dot)
  dot(a, b).block_until_ready()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    dot(a, b).block_until_ready()
    times.append(time.perf_counter() - start)
  seconds = statistics.median(times)
  return {'dtype': jnp.dtype(dtype).name, 'size': size, 'seconds': seconds,
          'flops_per_s': 2.0 * size ** 3 / seconds,
          'best_flops_per_s': 2.0 * size ** 3 / min(times)}
