"""An independent full-sequence reference for the window-scanned models.

Written from the definitions (WORKSPACE.md's window flow, the memory kinds' papers), not from
melodi_jax: the whole sequence at once in numpy float64, every memory an explicit mask over
global positions. It imports nothing from melodi_jax; it reads the parameter tree (by name) and
a few sizes from the model's config.

  vanilla          a token sees the earlier tokens of its own window and itself (block diagonal)
  transformer_xl   a token sees the W tokens before it and itself (banded), within its document
  memorizing       the XL band, plus gated attention (dense or top-k) over the newest `slots`
                   positions of the same document that lie before the token's window
"""

import dataclasses
import math

import jax
import numpy as np

KINDS = ('vanilla', 'transformer_xl', 'memorizing')


def t5_bucket(relative_position: int, num_buckets: int, max_distance: int) -> int:
  """T5's relative position bucket, causal (unidirectional) form, of one key - query offset.

  Offsets in the future share bucket 0; distances below num_buckets / 2 get a bucket each; larger
  ones are spaced logarithmically up to max_distance, and everything beyond shares the last
  bucket. (T5's TensorFlow code takes the log in float32, which lands one bucket lower where the
  ratio is exactly on a bucket boundary, e.g. 10 buckets, max distance 160, distance 10; this is
  the exact arithmetic. No configured pair has such a boundary below 2 x max_distance.)
  """
  distance = max(-relative_position, 0)
  max_exact = num_buckets // 2
  if distance < max_exact:
    return distance
  spread = math.log(distance / max_exact) / math.log(max_distance / max_exact)
  return min(max_exact + int(spread * (num_buckets - max_exact)), num_buckets - 1)


@dataclasses.dataclass(frozen=True)
class Spec:
  """The sizes the reference needs, read from a ModelConfig (plus its stack plan)."""
  kind: str
  window: int
  num_layers: int
  head_dim: int
  buckets: int
  max_distance: int
  bias_scale: float
  memory_layer: int = -1     # memorizing: the layer with the kNN memory
  slots: int = 0             # memorizing: entries per lane and head
  top_k: int = 0             # memorizing: 0 = dense

  @classmethod
  def of(cls, kind: str, config) -> 'Spec':
    assert kind in KINDS, kind
    assert not config.normalize_qk and not config.tie_embeddings and config.activation == 'relu'
    extra = {}
    if kind == 'memorizing':
      stack = config.stack
      extra = dict(memory_layer=stack.memory_layer % config.num_layers, slots=stack.memory_slots,
                   top_k=stack.top_k)
    return cls(kind, config.window_length, config.num_layers, config.head_dim,
               config.position_buckets, config.position_max_distance,
               config.position_bias_scale, **extra)


def perturbed(variables: dict, seed: int, scale: float = 0.5) -> dict:
  """Every parameter moved by scale x its spread (x 1 where constant, e.g. norm scales, gate
  logits at 0): a gate stuck at 0.5, a zero bias or a unit norm scale cannot hide a bug."""
  rng = np.random.RandomState(seed)

  def move(leaf):
    leaf = np.asarray(leaf, np.float32)
    spread = float(leaf.std()) or 1.0
    return (leaf + scale * spread * rng.randn(*leaf.shape)).astype(np.float32)

  return jax.tree_util.tree_map(move, variables)


def _rms_norm(x, scale):
  return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + 1e-6) * scale


def _softmax_rows(logits, allowed):
  """Softmax over the allowed entries of the last axis; rows with none allowed are all zero."""
  logits = np.where(allowed, logits, -np.inf)
  top = np.max(logits, axis=-1, keepdims=True)
  weights = np.where(allowed, np.exp(logits - np.where(np.isfinite(top), top, 0.0)), 0.0)
  total = weights.sum(axis=-1, keepdims=True)
  return weights / np.where(total > 0, total, 1.0)


def masks(spec: Spec, doc_start: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
  """(local bool[B, T, T], memory bool[B, T, T]): which key position each query may see.

  doc_start bool[B, N]: a document starts at that window (memory before it is forgotten).
  """
  position = np.arange(length)
  window_of = position // spec.window
  document = np.cumsum(np.asarray(doc_start, bool), axis=1)[:, window_of]       # [B, T]
  same_document = document[:, :, None] == document[:, None, :]
  back = position[:, None] - position[None, :]                                   # query - key
  if spec.kind == 'vanilla':
    local = (back >= 0) & (window_of[:, None] == window_of[None, :])
    local = np.broadcast_to(local, same_document.shape)
  else:
    local = same_document & (back >= 0) & (back <= spec.window)
  start = (window_of * spec.window)[:, None]                                     # query's window
  key = position[None, :]
  memory = same_document & (key < start) & (key >= start - spec.slots)
  return local, memory


def logits(spec: Spec, variables: dict, tokens, doc_start) -> np.ndarray:
  """float64[B, T, V]: the model's logits computed over the whole sequence at once."""
  params = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), variables['params'])
  tokens = np.asarray(tokens)
  length = tokens.shape[1]
  local, memory = masks(spec, doc_start, length)
  position = np.arange(length)
  buckets = np.vectorize(lambda r: t5_bucket(r, spec.buckets, spec.max_distance))(
      position[None, :] - position[:, None])                                    # [T, T]
  x = params['embed']['embedding'][tokens]                                       # [B, T, d]
  for layer in range(spec.num_layers):
    p = params['stack'][f'layer_{layer:02d}']
    x = x + _attention(spec, p['attention'], x, local, buckets,
                       memory if layer == spec.memory_layer else None)
    mlp = p['mlp']
    hidden = np.maximum(_rms_norm(x, mlp['norm']['scale']) @ mlp['wi']['kernel'], 0.0)
    x = x + hidden @ mlp['wo']['kernel']
  return _rms_norm(x, params['final_norm']['scale']) @ params['logits']['kernel']


def _attention(spec, p, x, local, buckets, memory):
  """Pre-norm multi-head attention over `local` keys (+ the gated kNN memory) -> [B, T, d]."""
  h = _rms_norm(x, p['norm']['scale'])
  query = np.einsum('btd,dhk->bthk', h, p['query']['kernel']) / math.sqrt(spec.head_dim)
  key = np.einsum('btd,dhk->bthk', h, p['key']['kernel'])
  value = np.einsum('btd,dhk->bthk', h, p['value']['kernel'])
  scores = np.einsum('bqhk,bshk->bhqs', query, key)                              # [B, H, T, T]
  bias = spec.bias_scale * p['position_bias']['table'][buckets]                  # [T, T, H]
  probs = _softmax_rows(scores + bias.transpose(2, 0, 1)[None], local[:, None])
  out = np.einsum('bhqs,bshk->bqhk', probs, value)
  if memory is not None:
    allowed = np.broadcast_to(memory[:, None], scores.shape)
    if spec.top_k:  # each query keeps its top_k allowed memory keys
      ranked = np.sort(np.where(allowed, scores, -np.inf), axis=-1)[..., ::-1]
      kth = ranked[..., min(spec.top_k, ranked.shape[-1]) - 1:][..., :1]
      allowed = allowed & (scores >= kth)
    cross = np.einsum('bhqs,bshk->bqhk', _softmax_rows(scores, allowed), value)
    gate = 1.0 / (1.0 + np.exp(-p['gate_logit']))                                # [H, 1]
    has_memory = memory.any(axis=-1)[:, :, None, None]                           # [B, T, 1, 1]
    out = np.where(has_memory, gate * out + (1.0 - gate) * cross, out)
  return np.einsum('bqhk,hkd->bqd', out, p['out']['kernel'])
