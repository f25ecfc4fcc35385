"""Dense softmax attention over query blocks, with a hand-written backward pass.

The same function as `attention.dot_product_attention` (dense, no dropout) applied to each query
block of `attention.query_blocks`, computed in the [B, H, T, Dh] layout the batched matmuls want:
the queries, keys and values are transposed once for all blocks instead of once per block, and
the backward pass is the softmax's closed form (dS = P * (dP - rowsum(dP * P))) instead of the
derivative of each elementwise step of the forward pass. It keeps per block only the softmax
probabilities. (FlashAttention's rowsum(dO * O) is the same sum and needs no [Tq, Tk] product,
but once the softmax saturates it cancels badly in float32: on the tiny model at learning rate
1e3, step 2's gradient norm came out 25,023 with it against 615.03 with autodiff; rowsum(dP * P)
gives 615.03.) Values and gradients equal `dot_product_attention`'s up to float rounding
(tests/test_attention_kernel.py, against softmax attention written from its definition).
"""

import functools
from typing import Sequence

import jax
import jax.numpy as jnp

MASKED = -1e30  # finite so fully-masked rows stay NaN-free (their probabilities are zeroed)

Block = tuple[int, int, int, int]  # (row0, row1, col0, col1): queries row0:row1 see keys col0:col1


def blocked_attention(query: jax.Array, keys: jax.Array, values: jax.Array, mask: jax.Array,
                      biases: Sequence[jax.Array | None], blocks: Sequence[Block]) -> jax.Array:
  """Softmax attention of each query block over its key columns; a query with no allowed key
  gets a zero output.

  query: [B, Tq, H, Dh] (already scaled); keys, values: [B, Tk, H, Dh]; mask: bool
  [B or 1, 1, Tq, Tk]; biases: one per block, float [B or 1, H, rows, columns] or None; blocks:
  static, their rows partitioning 0..Tq, each with every key its rows may see (keys outside a
  block's columns must be masked for its rows). Returns [B, Tq, H, Dh] in the query dtype.
  """
  assert len(biases) == len(blocks), f'{len(biases)} biases for {len(blocks)} blocks'
  spec = []  # static: per block its rows/columns and its bias's (shared by lanes, dtype) or None
  for (row0, row1, col0, col1), bias in zip(blocks, biases):
    bias_spec = None
    if bias is not None:
      expected = (query.shape[2], row1 - row0, col1 - col0)
      assert bias.shape[1:] == expected and bias.shape[0] in (1, query.shape[0]), (
          f'bias {bias.shape} for a block of {expected}')
      bias_spec = (bias.shape[0] == 1 < query.shape[0], jnp.dtype(bias.dtype).name)
    spec.append(((int(row0), int(row1), int(col0), int(col1)), bias_spec))
  return _attention(tuple(spec), query, keys, values, mask, tuple(biases))


def _materialized_swap(x: jax.Array) -> jax.Array:
  """x [B, H, Tq, Tk] -> [B, H, Tk, Tq] as a copy of its own on CPU, for dV = P^T dO and
  dK = dS^T Q: XLA folds a transpose that feeds a dot into the dot's dimension numbers, and
  XLA:CPU runs a batched dot that contracts the lhs's second-minor axis with Eigen instead of
  YNNPACK, ~3x slower ([2, 4, 320, 1024] x [2, 4, 320, 64] on one core: 11.0 ms against 5.7 ms
  with the transpose). An optimization barrier keeps the transpose; elsewhere XLA may fold it."""
  swapped = jnp.swapaxes(x, 2, 3)
  if jax.default_backend() == 'cpu':
    return jax.lax.optimization_barrier(swapped)
  return swapped


def _heads_first(x: jax.Array) -> jax.Array:
  return jnp.swapaxes(x, 1, 2)  # [B, T, H, Dh] <-> [B, H, T, Dh]


def _forward(spec, query, keys, values, mask, biases):
  q, k, v = _heads_first(query), _heads_first(keys), _heads_first(values)
  probs, outputs = [], []
  for ((row0, row1, col0, col1), _), bias in zip(spec, biases):
    logits = jnp.einsum('bhqd,bhkd->bhqk', q[:, :, row0:row1], k[:, :, col0:col1],
                        preferred_element_type=jnp.float32)
    if bias is not None:
      logits = logits + bias
    allowed = mask[:, :, row0:row1, col0:col1]
    logits = jnp.where(allowed, logits, MASKED)
    exp = jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True))
    p = jnp.where(allowed, exp / jnp.sum(exp, axis=-1, keepdims=True), 0.0)
    probs.append(p)
    outputs.append(jnp.einsum('bhqk,bhkd->bhqd', p.astype(v.dtype), v[:, :, col0:col1]))
  out = outputs[0] if len(outputs) == 1 else jnp.concatenate(outputs, axis=2)
  return _heads_first(out).astype(query.dtype), (q, k, v, mask, probs)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _attention(spec, query, keys, values, mask, biases):
  return _forward(spec, query, keys, values, mask, biases)[0]


def _attention_fwd(spec, query, keys, values, mask, biases):
  return _forward(spec, query, keys, values, mask, biases)


def _attention_bwd(spec, residuals, d_out):
  q, k, v, mask, probs = residuals
  d_out = _heads_first(d_out)                                              # [B, H, Tq, Dh]
  num_keys = k.shape[2]
  d_q, d_k, d_v, d_biases = [], [], [], []
  for ((row0, row1, col0, col1), bias_spec), p in zip(spec, probs):
    d_o = d_out[:, :, row0:row1]
    k_block, v_block = k[:, :, col0:col1], v[:, :, col0:col1]
    d_p = jnp.einsum('bhqd,bhkd->bhqk', d_o, v_block, preferred_element_type=jnp.float32)
    d_p = jnp.where(mask[:, :, row0:row1, col0:col1], d_p, 0.0)  # (masked: p = 0, d_p any)
    d_logits = p * (d_p - jnp.sum(d_p * p, axis=-1, keepdims=True))
    pad = ((0, 0), (0, 0), (col0, num_keys - col1), (0, 0))
    p_t = _materialized_swap(p.astype(d_o.dtype))                        # [B, H, Tk, Tq]
    d_v.append(jnp.pad(jnp.einsum('bhkq,bhqd->bhkd', p_t, d_o), pad))
    d_logits_in = d_logits.astype(q.dtype)
    d_q.append(jnp.einsum('bhqk,bhkd->bhqd', d_logits_in, k_block))
    d_logits_t = _materialized_swap(d_logits_in)
    d_k.append(jnp.pad(jnp.einsum('bhkq,bhqd->bhkd', d_logits_t, q[:, :, row0:row1]), pad))
    if bias_spec is None:
      d_biases.append(None)
    else:
      shared, dtype = bias_spec  # a bias shared by every lane: summed over lanes with adds
      d_biases.append((sum_lanes(d_logits) if shared else d_logits).astype(dtype))
  d_q = d_q[0] if len(d_q) == 1 else jnp.concatenate(d_q, axis=2)
  d_query = _heads_first(d_q).astype(q.dtype)
  d_keys = _heads_first(functools.reduce(jnp.add, d_k)).astype(k.dtype)
  d_values = _heads_first(functools.reduce(jnp.add, d_v)).astype(v.dtype)
  return d_query, d_keys, d_values, None, tuple(d_biases)


def sum_lanes(x: jax.Array) -> jax.Array:
  """x [B, ...] -> [1, ...]: the gradient of a bias shared by every lane, summed over lanes as
  B - 1 elementwise adds: XLA:CPU lowers a reduce_sum over the leading axis ~100x slower
  (YNNPACK reduce; it took ~12% of the CPU train step, benchmarks/README.md section 4)."""
  total = x[0]
  for lane in range(1, x.shape[0]):
    total = total + x[lane]
  return total[None]


_attention.defvjp(_attention_fwd, _attention_bwd)
