"""The one attention implementation every layer kind uses.

`dot_product_attention` is the primitive (masking, bias, dropout, top-k, empty rows); its dense
path without dropout runs, per query block, as `attention_kernel.blocked_attention` (the same
function with a hand-written backward pass), which is what training and evaluation use.
`Attention` is the projected, pre-normed sub-layer: its queries attend to their own keys plus any
`KeyGroup`s a memory supplies (short-term memory, XL cache, retrieved chunks, ...) under one causal
mask over positions, and optionally to a second, gated `cross` group (long-term memory, kNN
memory, recurrent states).
With a `WindowCache` it decodes one token: the query attends to the window's earlier tokens' cached
keys/values under the same static mask and bias tables, indexed by the token's slot.
When the caller makes the `INTERMEDIATES` collection mutable, `Attention` also stores what it
computed (softmax probabilities, masks, the cross gate) there for diagnostics; otherwise nothing is
stored and the computation is unchanged.
"""

from collections.abc import Mapping
from typing import NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from melodi_jax.layers import axes
from melodi_jax.layers.attention_kernel import MASKED, blocked_attention, sum_lanes
from melodi_jax.layers.norms import RMSNorm
from melodi_jax.layers.position import RelativePositionBias

# Flax collection of the diagnostics `Attention` sows (model.apply(..., mutable=[INTERMEDIATES])):
# under each Attention module's path,
#   self_probs: float32[B, H, Tq, Tk], its softmax over [the groups' keys..., its own keys]
#               (the queries' own Tq keys come last; decoding: the window's W cached keys);
#   self_mask:  bool[B or 1, 1, Tq, Tk], the keys each query may attend to;
#   cross_probs: float32[B, H, Tq, K] over the cross memory's K keys (with `cross_top_k`: over
#               each query's k best keys), only with a cross memory;
#   cross_gate: [B, 1, H, Dh or 1], the weight g of self-attention (1 - g on the cross memory;
#               1 in lanes whose cross memory is empty).
# Each is a one-element tuple (Flax's `sow`); the window scan stacks them to [N, ...].
INTERMEDIATES = 'intermediates'


class KeyGroup(NamedTuple):
  """Keys and values a query may attend to.

  keys, values: [B, K, H, Dh]; positions: int[K] static numpy (None for position-free memory,
  e.g. cross-attention); valid: bool[B, K] or None (all valid). Invalid (empty) slots never
  receive attention.
  """
  keys: jax.Array
  values: jax.Array
  positions: np.ndarray | None = None
  valid: jax.Array | None = None


class WindowCache(NamedTuple):
  """The current window's own keys/values, for decoding one token at a time.

  keys, values: [B, W, H, Dh] at window slots 0..W-1 (slots from `index` on are not filled yet);
  index: int32[] (traced), the slot of the token being decoded, the same in every lane.
  """
  keys: jax.Array
  values: jax.Array
  index: jax.Array


class AttentionOutput(NamedTuple):
  """output: [B, Tq, d] (no residual); keys/values: [B, Tq, H, Dh] of the queries' own tokens
  (decoding with a WindowCache: the window's [B, W, H, Dh] with this token's written in)."""
  output: jax.Array
  keys: jax.Array
  values: jax.Array


def causal_mask(query_positions: np.ndarray, key_positions: np.ndarray,
                span: int | None = None) -> np.ndarray:
  """bool[Tq, Tk]: key position <= query position (and within `span` tokens back, if given)."""
  rel = key_positions[None, :] - query_positions[:, None]
  mask = rel <= 0
  if span is not None:
    mask &= rel > -span
  return mask


def query_blocks(static_mask: np.ndarray, max_blocks: int,
                 min_rows: int = 32) -> list[tuple[int, int, int, int]]:
  """Splits the queries of a static mask bool[Tq, Tk] into row blocks that each attend only to
  the key columns some row of theirs may see: [(row0, row1, col0, col1), ...].

  Keys outside a block's column range are masked for all its rows, so attention over the range
  alone is the same softmax (masked keys get exactly zero weight); this skips the masked
  triangle of causal attention and the masked band of a sliding window (Transformer-XL's span-W
  window over 2W keys). Of 1, 2, 4, ... <= max_blocks equal blocks of >= min_rows rows, the split
  that computes the fewest (query, key) pairs is taken, a finer one only when it saves >= 10%.
  """
  num_queries, num_keys = static_mask.shape
  def split(count):
    bounds = np.linspace(0, num_queries, count + 1).astype(int)
    blocks = []
    for row0, row1 in zip(bounds[:-1], bounds[1:]):
      columns = np.flatnonzero(static_mask[row0:row1].any(axis=0))
      col0, col1 = (int(columns[0]), int(columns[-1]) + 1) if columns.size else (0, 1)
      blocks.append((int(row0), int(row1), col0, col1))
    return blocks
  best = [(0, num_queries, 0, num_keys)]
  count = 2
  while count <= max_blocks and num_queries // count >= min_rows:
    candidate = split(count)
    area = lambda blocks: sum((r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in blocks)
    if area(candidate) > 0.9 * area(best):
      break
    best, count = candidate, count * 2
  return best


def masked_top_k(scores: jax.Array, valid: jax.Array, k: int,
                 approximate: bool = False) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The k best allowed scores along the last axis (kNN lookup, chunk retrieval).

  scores: float[..., K]; valid: bool broadcastable to scores. Returns (scores [..., k],
  indices int32[..., k], found bool[..., k]); `found` is False where fewer than k were allowed.
  `approximate` uses jax.lax.approx_max_k (fast on TPU) instead of the exact jax.lax.top_k.
  """
  scores = jnp.where(valid, scores.astype(jnp.float32), MASKED)
  if approximate:
    top, index = jax.lax.approx_max_k(scores, k)
  else:
    top, index = jax.lax.top_k(scores, k)
  return top, index, top > MASKED / 2


def dot_product_attention(query: jax.Array, keys: jax.Array, values: jax.Array,
                          mask: jax.Array, bias: jax.Array | None = None, *,
                          dropout_rate: float = 0.0, dropout_rng: jax.Array | None = None,
                          deterministic: bool = True, top_k: int = 0,
                          approximate: bool = False, return_probs: bool = False):
  """Softmax attention; a query with no allowed key gets a zero output.

  query: [B, Tq, H, Dh] (already scaled); keys, values: [B, Tk, H, Dh];
  mask: bool broadcastable to [B, H, Tq, Tk]; bias: float broadcastable to [B, H, Tq, Tk].
  top_k > 0: each query attends only to its k best allowed keys (Memorizing Transformer's kNN
  lookup; `approximate` as in `masked_top_k`); 0: to all allowed keys (dense).
  Returns [B, Tq, H, Dh] in the query dtype. Softmax runs in float32. With `return_probs`:
  (that, the softmax probabilities float32[B, H, Tq, Tk] before dropout; [B, H, Tq, k] over the
  selected keys with top_k), which are computed either way.
  """
  logits = jnp.einsum('bqhd,bkhd->bhqk', query, keys, preferred_element_type=jnp.float32)
  if bias is not None:
    logits = _add_shared_bias(logits, bias) if bias.shape[0] == 1 else logits + bias
  if top_k:
    logits, index, mask = masked_top_k(logits, mask, min(top_k, keys.shape[1]), approximate)
    # values[b, index[b, h, q, j], h] -> [B, H, Tq, k, Dh]
    values = jax.vmap(jax.vmap(lambda v, i: v[i]))(jnp.swapaxes(values, 1, 2), index)
    equation = 'bhqk,bhqkd->bqhd'
  else:
    logits = jnp.where(mask, logits, MASKED)
    equation = 'bhqk,bkhd->bqhd'
  probs = jax.nn.softmax(logits, axis=-1) * mask
  weights = probs
  if not deterministic and dropout_rate > 0.0:
    keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, probs.shape)
    weights = probs * keep / (1.0 - dropout_rate)
  output = jnp.einsum(equation, weights.astype(values.dtype), values)
  return (output, probs) if return_probs else output


@jax.custom_vjp
def _add_shared_bias(logits: jax.Array, bias: jax.Array) -> jax.Array:
  """logits [B, ...] + bias [1, ...] shared by every lane. Same values and gradients as `+`; the
  bias gradient is summed over lanes as B - 1 elementwise adds, because XLA:CPU lowers the
  reduce_sum over the leading axis that `+` transposes to ~100x slower (YNNPACK reduce; it took
  ~12% of the CPU train step, see benchmarks/README.md)."""
  return logits + bias


def _add_shared_bias_fwd(logits, bias):
  return logits + bias, None


def _add_shared_bias_bwd(_, grad):
  return grad, sum_lanes(grad)


_add_shared_bias.defvjp(_add_shared_bias_fwd, _add_shared_bias_bwd)


class Attention(nn.Module):
  """Pre-norm multi-head attention with T5 relative position bias.

  Fields: `cross_gate` creates the learned gate theta[H, Dh] that mixes self- and cross-attention
  per head-channel as g * self + (1 - g) * cross with g = sigmoid(theta) (theta[H, 1], one gate
  per head, with `gate_per_head`; theta starts at `gate_logit_init`, 0: g = 0.5); `cross_top_k`
  > 0 restricts each query's cross-attention to its top-k keys (`cross_approximate`: approximate
  top-k). The call's `span` limits how far back
  (in positions) a query may look (Transformer-XL's sliding window).
  """
  model_dim: int
  num_heads: int
  head_dim: int
  dropout_rate: float = 0.0
  normalize_qk: bool = False
  position_buckets: int = 32
  position_max_distance: int = 128
  position_bias_scale: float = 1.0
  cross_gate: bool = False
  gate_per_head: bool = False       # Memorizing Transformer: one gate per head
  gate_logit_init: float = 0.0      # theta's initial value (> 0 starts toward self-attention)
  cross_top_k: int = 0              # 0: dense cross-attention over the whole cross memory
  cross_approximate: bool = False   # with cross_top_k: jax.lax.approx_max_k (TPU) over exact top-k
  query_blocks: int = 4             # at most this many query blocks skipping masked keys (1: off)
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    init = nn.initializers.variance_scaling(1.0, 'fan_in', 'truncated_normal')
    def projection(name):
      return nn.DenseGeneral((self.num_heads, self.head_dim), use_bias=False, dtype=self.dtype,
                             name=name, kernel_init=nn.with_logical_partitioning(
                                 init, (axes.EMBED, axes.HEADS, axes.KV)))
    self.norm = RMSNorm(dtype=self.dtype)
    self.query, self.key, self.value = projection('query'), projection('key'), projection('value')
    self.out = nn.DenseGeneral(self.model_dim, axis=(-2, -1), use_bias=False, dtype=self.dtype,
                               kernel_init=nn.with_logical_partitioning(
                                   init, (axes.HEADS, axes.KV, axes.EMBED)))
    self.dropout = nn.Dropout(self.dropout_rate)
    self.position_bias = RelativePositionBias(self.num_heads, self.position_buckets,
                                              self.position_max_distance,
                                              self.position_bias_scale)
    if self.normalize_qk:
      self.qk_scale = self.param('qk_scale', nn.initializers.constant(self.head_dim ** 0.5),
                                 (self.num_heads,), jnp.float32)
    if self.cross_gate:
      self.gate_logit = self.param('gate_logit', nn.initializers.constant(self.gate_logit_init),
                                   (self.num_heads, 1 if self.gate_per_head else self.head_dim),
                                   jnp.float32)

  def _project(self, h: jax.Array, projections: Sequence[nn.Module]) -> list[jax.Array]:
    """[p(h) for p in projections] ([B, T, H, Dh] each) as one matmul over the concatenated
    kernels: one [d, n x H x Dh] product runs closer to the matmul roofline on CPU than n
    narrow ones (the same parameters; initialization calls each projection to create them).
    On [B x T, d] rows: with the 3-d einsum XLA:CPU transposed the output's gradient before the
    weight-gradient matmul (benchmarks/README.md section 4, item 9)."""
    if self.is_initializing():
      return [p(h) for p in projections]
    kernel = jnp.concatenate([self._kernel(p) for p in projections], axis=1)   # [d, n x H, Dh]
    fused = _row_matmul(*nn.dtypes.promote_dtype(h, kernel, dtype=self.dtype), contract=1)
    return jnp.split(fused, len(projections), axis=2)

  def _out(self, out: jax.Array) -> jax.Array:
    """self.out(out) ([B, T, H, Dh] -> [B, T, d]) as a [B x T, H x Dh] matmul (see _project)."""
    if self.is_initializing():
      return self.out(out)
    return _row_matmul(*nn.dtypes.promote_dtype(out, self._kernel(self.out), dtype=self.dtype),
                       contract=2)

  @staticmethod
  def _kernel(projection: nn.Module) -> jax.Array:
    return nn.meta.unbox(projection.variables['params']['kernel'])

  def key_values(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Keys and values of hidden states x: [B, K, d] -> ([B, K, H, Dh], [B, K, H, Dh])."""
    keys, values = self._project(self.norm(x), (self.key, self.value))
    if self.normalize_qk:
      keys = _l2_normalize(keys)
    return keys, values

  def __call__(self, x: jax.Array, positions: np.ndarray, groups: Sequence[KeyGroup] = (),
               cross: KeyGroup | None = None, span: int | None = None,
               deterministic: bool = True, cache: WindowCache | None = None) -> AttentionOutput:
    """x: [B, Tq, d] at int positions[Tq] (static); attends to `groups` + its own tokens.

    With `cache`, x is the one token [B, 1, d] at window slot cache.index (`positions` is then
    ignored): it attends to the cached keys/values of slots 0..index as the window's tokens do.
    """
    h = self.norm(x)
    query, keys, values = self._project(h, (self.query, self.key, self.value))
    if self.normalize_qk:
      keys = _l2_normalize(keys)
      query = _l2_normalize(query) * self.qk_scale[:, None].astype(self.dtype)
    else:
      query = query * self.head_dim ** -0.5
    query_index = None
    if cache is not None:
      assert x.shape[1] == 1, f'decoding takes one token at a time, got {x.shape}'
      query_index = cache.index
      # Masks and biases below are static tables with a row per window slot; the token's row
      # is picked at run time, so decoding computes exactly what the window's forward pass does.
      positions = np.arange(cache.keys.shape[1])
      keys = jax.lax.dynamic_update_slice_in_dim(cache.keys, keys.astype(cache.keys.dtype),
                                                 query_index, axis=1)
      values = jax.lax.dynamic_update_slice_in_dim(cache.values, values.astype(cache.values.dtype),
                                                   query_index, axis=1)
    own = KeyGroup(keys, values, np.asarray(positions), None)
    everything = list(groups) + [own]
    all_keys = jnp.concatenate([g.keys.astype(self.dtype) for g in everything], axis=1)
    all_values = jnp.concatenate([g.values.astype(self.dtype) for g in everything], axis=1)
    positions = np.asarray(positions)
    key_positions = np.concatenate([g.positions for g in everything])
    static_mask = causal_mask(positions, key_positions, span)
    mask = jnp.asarray(static_mask)
    if query_index is not None:
      mask = mask[query_index][None]
    mask = mask[None, None]
    if any(g.valid is not None for g in everything):
      valid = jnp.concatenate([_valid_or_ones(g) for g in everything], axis=1)
      mask = mask & valid[:, None, None, :]
    dropout_rng = None if deterministic else self.make_rng('dropout')
    diagnostics = self.is_mutable_collection(INTERMEDIATES)
    if query_index is None and not diagnostics and (deterministic or not self.dropout_rate):
      blocks = query_blocks(static_mask, self.query_blocks)
      biases = [self.position_bias(positions[row0:row1], key_positions[col0:col1])
                for row0, row1, col0, col1 in blocks]
      out, probs = blocked_attention(query, all_keys, all_values, mask, biases, blocks), None
    else:   # one block: decoding, diagnostics (whole probability tables) and dropout's masks
      bias = self.position_bias(positions, key_positions, query_index)  # decoding: row picked
      out, probs = dot_product_attention(
          query, all_keys, all_values, mask, bias, dropout_rate=self.dropout_rate,
          dropout_rng=dropout_rng, deterministic=deterministic, return_probs=True)
    self.sow(INTERMEDIATES, 'self_probs', probs)  # (no-op unless the collection is mutable)
    self.sow(INTERMEDIATES, 'self_mask', mask)
    if cross is not None:
      assert self.cross_gate, 'cross-attention needs Attention(cross_gate=True)'
      out = self._gated_cross(query, out, cross, deterministic)
    output = self.dropout(self._out(out), deterministic=deterministic)
    return AttentionOutput(output, keys, values)

  def _gated_cross(self, query, self_out, cross: KeyGroup, deterministic: bool) -> jax.Array:
    """g * self + (1 - g) * cross per head-channel; lanes whose cross memory is empty keep self."""
    valid = _valid_or_ones(cross)
    keys, values = cross.keys.astype(self.dtype), cross.values.astype(self.dtype)
    if (not self.cross_top_k and not self.is_mutable_collection(INTERMEDIATES)
        and (deterministic or not self.dropout_rate)):
      cross_out, probs = blocked_attention(query, keys, values, valid[:, None, None, :], [None],
                                           [(0, query.shape[1], 0, keys.shape[1])]), None
    else:
      dropout_rng = None if deterministic else self.make_rng('dropout')
      cross_out, probs = dot_product_attention(
          query, keys, values, valid[:, None, None, :], dropout_rate=self.dropout_rate,
          dropout_rng=dropout_rng, deterministic=deterministic, top_k=self.cross_top_k,
          approximate=self.cross_approximate, return_probs=True)
    gate = jax.nn.sigmoid(self.gate_logit).astype(self.dtype)            # [H, Dh or 1]
    has_memory = jnp.any(valid, axis=1)[:, None, None, None]              # [B, 1, 1, 1]
    gate = jnp.where(has_memory, gate, jnp.ones_like(gate))               # [B, 1, H, Dh or 1]
    self.sow(INTERMEDIATES, 'cross_probs', probs)
    self.sow(INTERMEDIATES, 'cross_gate', gate)
    return gate * self_out + (1 - gate) * cross_out


def sown(intermediates: Mapping, name: str) -> dict[str, jax.Array]:
  """{module path: value} of what every Attention sowed as `name` (see `INTERMEDIATES`).

  intermediates: the INTERMEDIATES collection of an apply with it mutable; paths are the module
  paths joined by '/' (e.g. 'stack/layer_00/attention'), sorted; values unwrapped from their
  one-element tuples (under the window scan: [N, ...]).
  """
  found = {}
  def visit(tree, path):
    for key, value in tree.items():
      if key == name and isinstance(value, tuple):
        found['/'.join(path)] = value[0]
      elif isinstance(value, Mapping):
        visit(value, path + (key,))
  visit(intermediates, ())
  return dict(sorted(found.items()))


def _row_matmul(x: jax.Array, kernel: jax.Array, contract: int) -> jax.Array:
  """x [B, T, *in] times kernel [*in, *out] (its first `contract` axes are `in`) as one
  [B x T, prod(in)] x [prod(in), prod(out)] matmul -> [B, T, *out]."""
  rows = x.shape[0] * x.shape[1]
  size = int(np.prod(kernel.shape[:contract]))
  y = x.reshape(rows, size) @ kernel.reshape(size, -1)
  return y.reshape(x.shape[:2] + kernel.shape[contract:])


def _l2_normalize(x: jax.Array) -> jax.Array:
  x32 = x.astype(jnp.float32)
  return (x32 * jax.lax.rsqrt(jnp.sum(x32 * x32, axis=-1, keepdims=True) + 1e-6)).astype(x.dtype)


def _valid_or_ones(group: KeyGroup) -> jax.Array:
  if group.valid is not None:
    return group.valid
  return jnp.ones(group.keys.shape[:2], bool)
