"""MemLong-style retrieval memory (arXiv 2408.16967): past windows as retrievable chunks.

The memory layer (a lower layer) keeps the index: per chunk (= one past window) a retrieval key
(its mean-pooled, unit-normalised output), a retrieval counter and the window it was written in.
Each window retrieves the top-k chunks by cosine similarity with the newest chunk's key (the
window before this one: a key from the window itself would leak its later tokens to its earlier
ones). The newest chunk is never retrieved (the XL cache already holds it) nor evicted (it has
not been retrievable yet); a full memory evicts the chunk retrieved least often, ties by age.
The upper retrieval layers each keep the keys/values of every stored chunk and attend to the
retrieved ones, all at one shared position just before the window, in one softmax with their
local XL attention. Memory entries carry no gradient. The choice travels up through `extras`.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from melodi_jax.layers.attention import Attention, AttentionOutput, KeyGroup, masked_top_k
from melodi_jax.memory.addon import Reading

# extras key of the index's choice: {'chunks': int32[B, k], 'found': bool[B, k], 'slot': int32[B]}
RETRIEVAL = 'retrieval'
# MemLong gives every retrieved token one constant position; here the one just before the window.
RETRIEVED_POSITION = -1


def initial_index(batch_size: int, chunks: int, model_dim: int, dtype: jnp.dtype) -> dict:
  """{'chunk_keys': [B, C, d], 'valid': bool[B, C], 'hits', 'written_at': int32[B, C],
  'clock': int32[B] (windows since the document start)}; all empty."""
  return {'chunk_keys': jnp.zeros((batch_size, chunks, model_dim), dtype),
          'valid': jnp.zeros((batch_size, chunks), bool),
          'hits': jnp.zeros((batch_size, chunks), jnp.int32),
          'written_at': jnp.zeros((batch_size, chunks), jnp.int32),
          'clock': jnp.zeros((batch_size,), jnp.int32)}


def newest_chunk(index: dict) -> jax.Array:
  """int32[B]: the slot of the most recently written chunk (0 in an empty lane)."""
  return jnp.argmax(jnp.where(index['valid'], index['written_at'], -1), axis=1)


def retrieve(index: dict, top_k: int) -> tuple[jax.Array, jax.Array]:
  """The top_k chunks most cosine-similar to the newest chunk, the newest itself excluded.

  Returns (slots int32[B, k], found bool[B, k]); found is False where fewer chunks exist.
  """
  newest = newest_chunk(index)
  keys = index['chunk_keys'].astype(jnp.float32)
  query = jnp.take_along_axis(keys, newest[:, None, None], axis=1)[:, 0]          # [B, d]
  scores = jnp.einsum('bcd,bd->bc', keys, query)
  slots = jnp.arange(keys.shape[1])
  candidates = index['valid'] & (slots[None] != newest[:, None])
  _, chunks, found = masked_top_k(scores, candidates, top_k)
  return chunks, found


def count_hits(index: dict, chunks: jax.Array, found: jax.Array) -> dict:
  """Adds one to the counter of every retrieved chunk."""
  hits = jax.vmap(lambda h, c, f: h.at[c].add(f.astype(h.dtype)))(index['hits'], chunks, found)
  return dict(index, hits=hits)


def eviction_slot(index: dict) -> jax.Array:
  """int32[B]: where the next chunk goes: an empty slot if any, else the least retrieved chunk
  (ties: the oldest), never the newest chunk. Needs C >= 2."""
  big = jnp.iinfo(jnp.int32).max
  slots = jnp.arange(index['valid'].shape[1])
  newest = newest_chunk(index)
  old = index['valid'] & (slots[None] != newest[:, None])
  empty = ~index['valid']
  fewest = jnp.min(jnp.where(old, index['hits'], big), axis=1, keepdims=True)
  oldest_of_fewest = jnp.argmin(jnp.where(old & (index['hits'] == fewest),
                                          index['written_at'], big), axis=1)
  return jnp.where(empty.any(axis=1), jnp.argmax(empty, axis=1), oldest_of_fewest)


def add_chunk(index: dict, key: jax.Array, slot: jax.Array) -> dict:
  """Stores the retrieval key [B, d] at `slot` [B] with a zero counter; advances the clock."""
  lanes = jnp.arange(key.shape[0])
  return {'chunk_keys': index['chunk_keys'].at[lanes, slot].set(
              key.astype(index['chunk_keys'].dtype)),
          'valid': index['valid'].at[lanes, slot].set(True),
          'hits': index['hits'].at[lanes, slot].set(0),
          'written_at': index['written_at'].at[lanes, slot].set(index['clock']),
          'clock': index['clock'] + 1}


def retrieval_key(tokens: jax.Array) -> jax.Array:
  """The mean-pooled, unit-normalised window [B, W, d] -> [B, d] (no gradient)."""
  pooled = jnp.mean(jax.lax.stop_gradient(tokens).astype(jnp.float32), axis=1)
  return pooled * jax.lax.rsqrt(jnp.sum(pooled * pooled, axis=-1, keepdims=True) + 1e-12)


@dataclasses.dataclass(frozen=True)
class RetrievalIndex:
  """The memory layer's addon: keeps the index, retrieves, picks the slot, passes both up."""
  chunks: int = 64      # C: windows kept
  top_k: int = 4        # chunks retrieved per window
  key: str = 'retrieval_index'

  def attention_options(self) -> dict:
    return {}

  def initial_state(self, config, batch_size: int) -> dict:
    return initial_index(batch_size, self.chunks, config.model_dim, config.memory_dtype)

  def read(self, config, attention: Attention, state: dict, extras: dict,
           deterministic: bool) -> Reading:
    # Everything here depends on the index before the window only (decoding one token reads it).
    chunks, found = retrieve(state, self.top_k)
    counted = count_hits(state, chunks, found)
    choice = {'chunks': chunks, 'found': found, 'slot': eviction_slot(counted)}
    return Reading(context=counted, extras={RETRIEVAL: choice})

  def write(self, config, attention: Attention, state: dict, extras: dict, reading: Reading,
            tokens: jax.Array, attended: AttentionOutput,
            deterministic: bool) -> tuple[dict, dict]:
    slot = reading.extras[RETRIEVAL]['slot']
    return add_chunk(reading.context, retrieval_key(tokens), slot), extras


@dataclasses.dataclass(frozen=True)
class RetrievalReader:
  """An upper retrieval layer's addon: stores its chunks' keys/values, attends to the retrieved."""
  chunks: int = 64
  key: str = 'retrieval'

  def attention_options(self) -> dict:
    return {}

  def initial_state(self, config, batch_size: int) -> dict:
    """{'keys', 'values': [B, C, W, H, Dh]} (validity lives in the index)."""
    shape = (batch_size, self.chunks, config.window_length, config.num_heads, config.head_dim)
    return {'keys': jnp.zeros(shape, config.memory_dtype),
            'values': jnp.zeros(shape, config.memory_dtype)}

  def read(self, config, attention: Attention, state: dict, extras: dict,
           deterministic: bool) -> Reading:
    chosen = extras[RETRIEVAL]
    batch, k = chosen['chunks'].shape
    def gather(store):  # [B, C, W, H, Dh] -> [B, k * W, H, Dh]
      picked = jnp.take_along_axis(store, chosen['chunks'][:, :, None, None, None], axis=1)
      return picked.reshape((batch, -1) + store.shape[3:])
    window = state['keys'].shape[2]
    valid = jnp.repeat(chosen['found'], window, axis=1)
    positions = np.full(k * window, RETRIEVED_POSITION)
    return Reading(groups=[KeyGroup(gather(state['keys']), gather(state['values']), positions,
                                    valid)])

  def write(self, config, attention: Attention, state: dict, extras: dict, reading: Reading,
            tokens: jax.Array, attended: AttentionOutput,
            deterministic: bool) -> tuple[dict, dict]:
    slot = extras[RETRIEVAL]['slot']
    lanes = jnp.arange(slot.shape[0])
    def put(store, new):
      return store.at[lanes, slot].set(jax.lax.stop_gradient(new).astype(store.dtype))
    return {'keys': put(state['keys'], attended.keys),
            'values': put(state['values'], attended.values)}, extras
