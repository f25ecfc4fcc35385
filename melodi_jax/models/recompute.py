"""The window scan with rematerialisation, saving only what it cannot rebuild for the backward pass.

A plain `jax.checkpoint` on the scan body makes the scan save its carry once per window: for a
FIFO of L slots that appends I per window, N windows keep N copies of L slots although only N x I
slots are new. `window_scan` saves, per window, the carry leaves that are not FIFOs plus the I
slots each FIFO leaf gained, and rebuilds a FIFO before window t in the backward pass as slots
t*I .. t*I+L of [FIFO before window 0, gained slots of windows 0..N-1]. What else a window keeps
is `Saves`: nothing (its forward pass is recomputed in the backward pass, what `jax.checkpoint`
with no saved residuals does), or what a checkpoint policy saves (e.g. the matmul outputs; the
forward pass stacks those per window and the backward pass recomputes only the rest).

Slots the rebuilt FIFO holds where the forward pass had reset a lane (document start) contain
older keys/values instead of zeros; they are invalid there (the saved `valid` mask says so), so
no output or gradient depends on them.
"""

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

# fn(params, carry, x) -> (carry, y): one window; carry and y pytrees, x a pytree of [...] slices.
WindowFn = Callable[[Any, Any, Any], tuple[Any, Any]]


class Saves:
  """What a window keeps for the backward pass besides its inputs: `policy` None (nothing: the
  window is recomputed) or a jax.checkpoint policy (its saveable values are kept per window).

  With a policy the forward pass's trace records here how its window's vjp is rebuilt from the
  kept values (`_Rebuild`); the backward pass of the same trace reads it (one `Saves` per call)."""

  def __init__(self, policy: Callable[..., bool] | None = None):
    self.policy = policy
    self.rebuild = None


def _differentiable(leaf) -> bool:
  return jnp.issubdtype(leaf.dtype, jnp.inexact)


def _zero_cotangent(leaf):
  if _differentiable(leaf):
    return jnp.zeros_like(leaf)
  return np.zeros(leaf.shape, jax.dtypes.float0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 4, 5))
def window_scan(fn: WindowFn, params: Any, carry: Any, xs: Any, increments: tuple[int, ...],
                saves: Saves) -> tuple[Any, Any]:
  """`jax.lax.scan(lambda c, x: fn(params, c, x), carry, xs)` with a backward pass that keeps
  per window what `saves` says and recomputes the rest.

  increments: one int per leaf of `carry` (jax.tree.leaves order): I > 0 for a FIFO leaf
  [B, L, ...] that every window shifts by I slots along axis 1, appending its new slots last;
  0 for any other leaf (saved whole, per window).
  """
  return jax.lax.scan(lambda c, x: fn(params, c, x), carry, xs)


def _window_vjp(fn, params, carry, x, policy):
  """jax.vjp of one window in its differentiable inputs (params, float carry and x leaves), the
  window checkpointed with `policy` when given: (new carry, y, the vjp function)."""
  treedef, x_treedef = jax.tree.structure(carry), jax.tree.structure(x)
  carry_leaves, x_leaves = jax.tree.leaves(carry), jax.tree.leaves(x)
  carry_diff = [i for i, leaf in enumerate(carry_leaves) if _differentiable(leaf)]
  x_diff = [i for i, leaf in enumerate(x_leaves) if _differentiable(leaf)]

  def differentiable_part(p, c_diff, x_part):
    c_all, x_all = list(carry_leaves), list(x_leaves)
    for i, leaf in zip(carry_diff, c_diff):
      c_all[i] = leaf
    for i, leaf in zip(x_diff, x_part):
      x_all[i] = leaf
    new_c, y = fn(p, treedef.unflatten(c_all), x_treedef.unflatten(x_all))
    new_leaves = jax.tree.leaves(new_c)
    return ([new_leaves[i] for i in carry_diff], y), new_c

  if policy is not None:
    differentiable_part = jax.checkpoint(differentiable_part, policy=policy, prevent_cse=False)
  (_, y), vjp, new_c = jax.vjp(differentiable_part, params, [carry_leaves[i] for i in carry_diff],
                               [x_leaves[i] for i in x_diff], has_aux=True)
  return new_c, y, vjp


class _Rebuild:
  """How a window's vjp function (a pytree whose leaves are its residuals) is rebuilt in the
  backward pass: each leaf is one of the window's inputs, a kept value, or a constant."""

  def __init__(self, treedef, sources: list):
    self.treedef = treedef
    self.sources = sources  # per leaf: ('input', j), ('kept', k) or ('constant', value)

  @classmethod
  def split(cls, vjp, inputs: list) -> tuple['_Rebuild', list]:
    """(how to rebuild `vjp`, the values to keep: its leaves the window computed)."""
    leaves, treedef = jax.tree.flatten(vjp)
    by_id = {id(leaf): j for j, leaf in reversed(list(enumerate(inputs)))}
    sources, kept = [], []
    for leaf in leaves:
      if id(leaf) in by_id:
        sources.append(('input', by_id[id(leaf)]))
      elif isinstance(leaf, jax.core.Tracer):
        sources.append(('kept', len(kept)))
        kept.append(leaf)
      else:
        sources.append(('constant', leaf))
    return cls(treedef, sources), kept

  def __call__(self, inputs: list, kept: list):
    leaves = [inputs[j] if kind == 'input' else kept[j] if kind == 'kept' else j
              for kind, j in self.sources]
    return self.treedef.unflatten(leaves)


def kept_bytes(fn: WindowFn, params: Any, carry: Any, x: Any, policy: Callable[..., bool]) -> int:
  """Bytes one window (x: one window's slice) keeps for the backward pass under `policy`, beside
  its inputs (shapes only: nothing is computed)."""
  def kept(p, c, w):
    _, _, vjp = _window_vjp(fn, p, c, w, policy)
    return _Rebuild.split(vjp, _inputs(p, c, w))[1]
  abstract = lambda tree: jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree)
  shapes = jax.eval_shape(kept, abstract(params), abstract(carry), abstract(x))
  return sum(int(np.prod(a.shape)) * jnp.dtype(a.dtype).itemsize for a in shapes)


def _inputs(params, carry, x) -> list:
  return jax.tree.leaves(params) + jax.tree.leaves(carry) + jax.tree.leaves(x)


def _forward(fn, params, carry, xs, increments, saves):
  assert len(increments) == len(jax.tree.leaves(carry)), (
      f'{len(increments)} increments for {len(jax.tree.leaves(carry))} carry leaves')

  def step(c, x):
    if saves.policy is None:
      new_c, y = fn(params, c, x)
      kept_values = []
    else:
      new_c, y, vjp = _window_vjp(fn, params, c, x, saves.policy)
      saves.rebuild, kept_values = _Rebuild.split(vjp, _inputs(params, c, x))
    kept = [leaf for leaf, inc in zip(jax.tree.leaves(c), increments) if not inc]
    gained = [leaf[:, -inc:] for leaf, inc in zip(jax.tree.leaves(new_c), increments) if inc]
    return new_c, (y, kept, gained, kept_values)

  final, (ys, kept, gained, kept_values) = jax.lax.scan(step, carry, xs)
  initial = [leaf for leaf, inc in zip(jax.tree.leaves(carry), increments) if inc]
  return (final, ys), (params, xs, initial, kept, gained, kept_values)


def _backward(fn, increments, saves, residuals, cotangents):
  params, xs, initial, kept, gained, kept_values = residuals
  d_final, d_ys = cotangents
  treedef = jax.tree.structure(d_final)
  histories = []  # [B, L + N*I, ...]: a FIFO's slots before window 0, then every gained slot
  for start, new in zip(initial, gained):
    new = jnp.swapaxes(new, 0, 1)                                         # [B, N, I, ...]
    new = new.reshape((new.shape[0], -1) + new.shape[3:])
    histories.append(jnp.concatenate([start, new.astype(start.dtype)], axis=1))

  def carry_before(t, kept_t):
    kept_it, history_it = iter(kept_t), iter(zip(histories, initial))
    leaves = []
    for inc in increments:
      if inc:
        history, start = next(history_it)
        leaves.append(jax.lax.dynamic_slice_in_dim(history, t * inc, start.shape[1], axis=1))
      else:
        leaves.append(next(kept_it))
    return treedef.unflatten(leaves)

  def step(acc, inputs):
    d_carry, d_params = acc
    t, x, kept_t, d_y, kept_values_t = inputs
    carry = carry_before(t, kept_t)
    if saves.policy is None:  # recompute the window
      _, _, vjp = _window_vjp(fn, params, carry, x, None)
    else:
      assert saves.rebuild is not None, 'window_scan: the backward pass ran before the forward'
      vjp = saves.rebuild(_inputs(params, carry, x), kept_values_t)
    d_p, d_c, d_x = vjp((d_carry, d_y))
    return (d_c, jax.tree.map(jnp.add, d_params, d_p)), d_x

  # Leaves of the carry before window 0 (shapes and dtypes), in tree order.
  kept_it, initial_it = iter(kept), iter(initial)
  start = [next(initial_it) if inc else next(kept_it)[0] for inc in increments]
  carry_diff = [i for i, leaf in enumerate(start) if _differentiable(leaf)]
  final_leaves = jax.tree.leaves(d_final)
  num_windows = jax.tree.leaves(xs)[0].shape[0]
  (d_carry, d_params), d_x = jax.lax.scan(
      step, ([final_leaves[i] for i in carry_diff], jax.tree.map(jnp.zeros_like, params)),
      (jnp.arange(num_windows), xs, kept, d_ys, kept_values), reverse=True)

  d_start = [_zero_cotangent(leaf) for leaf in start]
  for i, leaf in zip(carry_diff, d_carry):
    d_start[i] = leaf
  x_leaves = jax.tree.leaves(xs)
  d_xs = [_zero_cotangent(leaf) for leaf in x_leaves]
  for i, leaf in zip([i for i, leaf in enumerate(x_leaves) if _differentiable(leaf)], d_x):
    d_xs[i] = leaf
  return d_params, treedef.unflatten(d_start), jax.tree.unflatten(jax.tree.structure(xs), d_xs)


window_scan.defvjp(_forward, _backward)
