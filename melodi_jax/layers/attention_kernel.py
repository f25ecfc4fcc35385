"""Dense softmax attention over query blocks, with a hand-written backward pass.

The same function as `attention.dot_product_attention` (dense, no dropout) applied to each query
block of `attention.query_blocks`, computed in the [B, H, T, Dh] layout the batched matmuls want:
the queries, keys and values are transposed once for all blocks instead of once per block, and
the backward pass is the softmax's closed form (dS = P * (dP - rowsum(dP * P))) instead of the
derivative of each elementwise step of the forward pass. A block keeps its softmax probabilities
for the backward pass, except a block over many keys without a bias (cross-attention to a
long-term or kNN memory): it keeps only each row's log-sum-exp and recomputes the probabilities,
transposed, from the queries and keys (see `RECOMPUTE_KEYS`). (FlashAttention's rowsum(dO * O)
is the same sum and needs no [Tq, Tk] product, but once the softmax saturates it cancels badly in
float32: on the tiny model at learning rate 1e3, step 2's gradient norm came out 25,023 with it
against 615.03 with autodiff; rowsum(dP * P) gives 615.03.) Values and gradients equal
`dot_product_attention`'s up to float rounding (tests/test_attention_kernel.py, against softmax
attention written from its definition).
"""

import functools
from typing import Sequence

import jax
from jax.ad_checkpoint import checkpoint_name
import jax.numpy as jnp

MASKED = -1e30  # finite so fully-masked rows stay NaN-free (their probabilities are zeroed)

Block = tuple[int, int, int, int]  # (row0, row1, col0, col1): queries row0:row1 see keys col0:col1

# A block without a bias over at least this many keys recomputes its probabilities in the backward
# pass instead of keeping them: [B, H, rows, keys] floats per call add up over a segment's windows
# (MELODI's long-term cross-attention at the CPU bench size, 1024 slots: 80 MiB per segment, each
# step zero-filled, page-faulted and written, then read back through a transpose), where the
# recomputation is one more QK^T-sized matmul. Computed transposed ([keys, rows]), the backward
# needs no transpose of the probabilities for dV = P^T dO nor of dS for dK = dS^T Q (only dQ's).
# Biased blocks (self-attention with a position bias, <= a few hundred keys) keep theirs.
# (benchmarks/README.md section 4, item 11: MELODI's step at cpu_w256, 2.98 -> 2.82 s on one core.)
RECOMPUTE_KEYS = 512
# The name of a recomputing block's per-row log-sum-exp (jax.ad_checkpoint.checkpoint_name), for
# remat policies to keep it (models/decoder.py SAVED).
LOG_SUM_EXP = 'attention_log_sum_exp'


def blocked_attention(query: jax.Array, keys: jax.Array, values: jax.Array, mask: jax.Array,
                      biases: Sequence[jax.Array | None], blocks: Sequence[Block],
                      recompute_keys: int | None = None) -> jax.Array:
  """Softmax attention of each query block over its key columns; a query with no allowed key
  gets a zero output.

  query: [B, Tq, H, Dh] (already scaled); keys, values: [B, Tk, H, Dh]; mask: bool
  [B or 1, 1, Tq, Tk]; biases: one per block, float [B or 1, H, rows, columns] or None; blocks:
  static, their rows partitioning 0..Tq, each with every key its rows may see (keys outside a
  block's columns must be masked for its rows); recompute_keys: a block without a bias over at
  least this many keys recomputes its probabilities in the backward pass (None: `RECOMPUTE_KEYS`).
  Returns [B, Tq, H, Dh] in the query dtype.
  """
  assert len(biases) == len(blocks), f'{len(biases)} biases for {len(blocks)} blocks'
  if recompute_keys is None:
    recompute_keys = RECOMPUTE_KEYS
  spec = []  # static, per block: its rows/columns; its bias's (shared by lanes, dtype) or None;
  #            whether its backward pass recomputes the probabilities
  for (row0, row1, col0, col1), bias in zip(blocks, biases):
    bias_spec = None
    if bias is not None:
      expected = (query.shape[2], row1 - row0, col1 - col0)
      assert bias.shape[1:] == expected and bias.shape[0] in (1, query.shape[0]), (
          f'bias {bias.shape} for a block of {expected}')
      bias_spec = (bias.shape[0] == 1 < query.shape[0], jnp.dtype(bias.dtype).name)
    recompute = bias is None and col1 - col0 >= recompute_keys
    spec.append(((int(row0), int(row1), int(col0), int(col1)), bias_spec, recompute))
  return _attention(tuple(spec), query, keys, values, mask, tuple(biases))


def _materialized_swap(x: jax.Array) -> jax.Array:
  """x [B, H, Tq, Tk] -> [B, H, Tk, Tq] (or back) as a copy of its own on CPU, for dV = P^T dO,
  dK = dS^T Q and, in a recomputing block, dQ = dS K: XLA folds a transpose that feeds a dot
  into the dot's dimension numbers, and XLA:CPU runs a batched dot that contracts the lhs's
  second-minor axis with Eigen instead of YNNPACK, ~3x slower ([2, 4, 320, 1024] x
  [2, 4, 320, 64] on one core: 11.0 ms against 5.7 ms with the transpose). An optimization
  barrier keeps the transpose; elsewhere XLA may fold it."""
  swapped = jnp.swapaxes(x, 2, 3)
  if jax.default_backend() == 'cpu':
    return jax.lax.optimization_barrier(swapped)
  return swapped


def _heads_first(x: jax.Array) -> jax.Array:
  return jnp.swapaxes(x, 1, 2)  # [B, T, H, Dh] <-> [B, H, T, Dh]


def _forward(spec, query, keys, values, mask, biases):
  q, k, v = _heads_first(query), _heads_first(keys), _heads_first(values)
  saved, outputs = [], []  # per block: its probabilities, or its rows' log-sum-exp (recomputing)
  for ((row0, row1, col0, col1), _, recompute), bias in zip(spec, biases):
    logits = jnp.einsum('bhqd,bhkd->bhqk', q[:, :, row0:row1], k[:, :, col0:col1],
                        preferred_element_type=jnp.float32)
    if bias is not None:
      logits = logits + bias
    allowed = mask[:, :, row0:row1, col0:col1]
    logits = jnp.where(allowed, logits, MASKED)
    maximum = jnp.max(logits, axis=-1, keepdims=True)
    exp = jnp.exp(logits - maximum)
    total = jnp.sum(exp, axis=-1, keepdims=True)
    p = jnp.where(allowed, exp / total, 0.0)
    saved.append(checkpoint_name(maximum + jnp.log(total), LOG_SUM_EXP) if recompute else p)
    outputs.append(jnp.einsum('bhqk,bhkd->bhqd', p.astype(v.dtype), v[:, :, col0:col1]))
  out = outputs[0] if len(outputs) == 1 else jnp.concatenate(outputs, axis=2)
  return _heads_first(out).astype(query.dtype), (q, k, v, mask, saved)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _attention(spec, query, keys, values, mask, biases):
  return _forward(spec, query, keys, values, mask, biases)[0]


def _attention_fwd(spec, query, keys, values, mask, biases):
  return _forward(spec, query, keys, values, mask, biases)


def _attention_bwd(spec, residuals, d_out):
  q, k, v, mask, saved = residuals
  d_out = _heads_first(d_out)                                              # [B, H, Tq, Dh]
  num_keys = k.shape[2]
  d_q, d_k, d_v, d_biases = [], [], [], []
  for ((row0, row1, col0, col1), bias_spec, recompute), kept in zip(spec, saved):
    d_o, q_rows = d_out[:, :, row0:row1], q[:, :, row0:row1]
    k_block, v_block = k[:, :, col0:col1], v[:, :, col0:col1]
    allowed = mask[:, :, row0:row1, col0:col1]
    pad = ((0, 0), (0, 0), (col0, num_keys - col1), (0, 0))
    if recompute:
      block_d_q, block_d_k, block_d_v = _recomputed_block_bwd(q_rows, k_block, v_block, allowed,
                                                              kept, d_o)
      d_biases.append(None)
    else:
      block_d_q, block_d_k, block_d_v, d_logits = _kept_block_bwd(q_rows, k_block, v_block,
                                                                  allowed, kept, d_o)
      if bias_spec is None:
        d_biases.append(None)
      else:
        shared, dtype = bias_spec  # a bias shared by every lane: summed over lanes with adds
        d_biases.append((sum_lanes(d_logits) if shared else d_logits).astype(dtype))
    d_q.append(block_d_q)
    d_k.append(jnp.pad(block_d_k, pad))
    d_v.append(jnp.pad(block_d_v, pad))
  d_q = d_q[0] if len(d_q) == 1 else jnp.concatenate(d_q, axis=2)
  d_query = _heads_first(d_q).astype(q.dtype)
  d_keys = _heads_first(functools.reduce(jnp.add, d_k)).astype(k.dtype)
  d_values = _heads_first(functools.reduce(jnp.add, d_v)).astype(v.dtype)
  return d_query, d_keys, d_values, None, tuple(d_biases)


def _kept_block_bwd(q, k, v, allowed, p, d_o):
  """One block's dQ, dK, dV and dS from its kept probabilities p [B, H, rows, keys]."""
  d_p = jnp.einsum('bhqd,bhkd->bhqk', d_o, v, preferred_element_type=jnp.float32)
  d_p = jnp.where(allowed, d_p, 0.0)  # (masked: p = 0, d_p any)
  d_logits = p * (d_p - jnp.sum(d_p * p, axis=-1, keepdims=True))
  d_v = jnp.einsum('bhkq,bhqd->bhkd', _materialized_swap(p.astype(d_o.dtype)), d_o)
  d_logits_in = d_logits.astype(q.dtype)
  d_q = jnp.einsum('bhqk,bhkd->bhqd', d_logits_in, k)
  d_k = jnp.einsum('bhkq,bhqd->bhkd', _materialized_swap(d_logits_in), q)
  return d_q, d_k, d_v, d_logits


def _recomputed_block_bwd(q, k, v, allowed, log_sum_exp, d_o):
  """One block's dQ, dK, dV from its rows' log-sum-exp [B, H, rows, 1]: the probabilities and
  dS recomputed as [B, H, keys, rows], the layout dV = P^T dO and dK = dS^T Q take as is."""
  allowed_t = jnp.swapaxes(allowed, 2, 3)
  logits_t = jnp.einsum('bhkd,bhqd->bhkq', k, q, preferred_element_type=jnp.float32)
  p_t = jnp.exp(jnp.where(allowed_t, logits_t - jnp.swapaxes(log_sum_exp, 2, 3), MASKED))
  d_p_t = jnp.einsum('bhkd,bhqd->bhkq', v, d_o, preferred_element_type=jnp.float32)
  d_p_t = jnp.where(allowed_t, d_p_t, 0.0)  # (masked: p = 0, d_p any)
  d_logits_t = p_t * (d_p_t - jnp.sum(d_p_t * p_t, axis=2, keepdims=True))
  d_v = jnp.einsum('bhkq,bhqd->bhkd', p_t.astype(d_o.dtype), d_o)
  d_logits_t = d_logits_t.astype(q.dtype)
  d_k = jnp.einsum('bhkq,bhqd->bhkd', d_logits_t, q)
  d_q = jnp.einsum('bhqk,bhkd->bhqd', _materialized_swap(d_logits_t), k)
  return d_q, d_k, d_v


def sum_lanes(x: jax.Array) -> jax.Array:
  """x [B, ...] -> [1, ...]: the gradient of a weight shared by every lane (a bias, a token
  mixer), summed over lanes as B - 1 elementwise adds on CPU: XLA:CPU lowers a reduce_sum over
  the leading axis ~100x slower (YNNPACK reduce; it took ~12% of the CPU train step,
  benchmarks/README.md section 4). Elsewhere a reduce_sum (lanes may be sharded over devices,
  and B may be large)."""
  if jax.default_backend() != 'cpu':
    return jnp.sum(x, axis=0, keepdims=True)
  total = x[0]
  for lane in range(1, x.shape[0]):
    total = total + x[lane]
  return total[None]


_attention.defvjp(_attention_fwd, _attention_bwd)
