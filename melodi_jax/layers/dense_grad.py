"""A [R, K] x [K, N] matmul whose weight gradient suits XLA:CPU when K > N.

The weight gradient x^T dy contracts the rows of both operands. XLA:CPU runs such a dot with
Eigen, and for a tall result ([K, N] with K > N, e.g. the MLP's output projection, K = 1024,
N = 256, over R = 640 rows) that is ~1.4x slower than computing its transpose dy^T x ([N, K])
and transposing that (on one core: 5.1 ms against 3.7 ms, benchmarks/README.md section 4,
item 10). An optimization barrier keeps XLA from folding the transpose back into the dot.
Values and gradients are those of `x @ w`.
"""

import jax


@jax.custom_vjp
def matmul(x: jax.Array, w: jax.Array) -> jax.Array:
  """x [R, K] @ w [K, N] -> [R, N]."""
  return x @ w


def _matmul_fwd(x, w):
  return x @ w, (x, w)


def _matmul_bwd(residuals, d_y):
  x, w = residuals
  d_x = (d_y @ w.T).astype(x.dtype)
  if w.shape[0] > w.shape[1] and jax.default_backend() == 'cpu':
    d_w = jax.lax.optimization_barrier(d_y.T @ x).T
  else:
    d_w = x.T @ d_y
  return d_x, d_w.astype(w.dtype)


matmul.defvjp(_matmul_fwd, _matmul_bwd)


def dot_general(lhs: jax.Array, rhs: jax.Array, dimension_numbers, precision=None,
                preferred_element_type=None) -> jax.Array:
  """For `nn.Dense(dot_general=...)` on [R, K] inputs: `matmul`."""
  del precision, preferred_element_type  # nn.Dense passes its defaults (None)
  (lhs_contract, rhs_contract), batch = dimension_numbers
  assert (lhs.ndim, rhs.ndim, tuple(lhs_contract), tuple(rhs_contract), tuple(map(tuple, batch))
          ) == (2, 2, (1,), (0,), ((), ())), (
              f'dense_grad.dot_general takes [R, K] x [K, N], got {lhs.shape} x {rhs.shape}')
  return matmul(lhs, rhs)
