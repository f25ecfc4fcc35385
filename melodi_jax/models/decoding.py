"""Streaming decoding with memory: the prompt window by window, then one token at a time.

Memory of every kind changes only at window boundaries, and inside a window a token sees only the
window's memory and the window's earlier tokens (MELODI's summaries sit after the window). So:
whole windows of the prompt run through the ordinary scanned `apply` (memory carried exactly as in
training); the current, partial window runs one token at a time against a per-layer cache of the
window's own keys/values (`DecoderLM.__call__(..., cache=...)`); when the window is full, the
ordinary `apply` runs on it (T = W) with the memory from before it, which updates the memory
exactly as training does, and the cache starts afresh. There is no BOS: a stream starts with at
least one given token.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from melodi_jax.models.decoder import DecoderLM


class DecodeState(NamedTuple):
  """Where B lanes stand in their streams (a pytree; lanes move in lockstep).

  memory: the memory before the current window (DecoderLM.init_memory layout);
  cache: the current window's keys/values per layer (DecoderLM.init_cache); cache['index'] =
      int32[] tokens of the current window fed so far (0..W-1);
  window: int32[B, W] the current window's tokens so far (slots from index on are stale);
  doc_start: bool[B] the current window starts a document (its memory is reset first);
  logits: float32[B, V] logits of the token that follows the last one fed.
  """
  memory: dict
  cache: dict
  window: jax.Array
  doc_start: jax.Array
  logits: jax.Array


def sample_token(logits: jax.Array, key: jax.Array, temperature: float = 1.0,
                 top_k: int = 0) -> jax.Array:
  """float32[B, V] -> int32[B]. temperature 0: greedy (argmax); top_k > 0: sample among the k
  most likely tokens only."""
  if temperature <= 0.0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = logits / temperature
  if top_k:
    kth = jax.lax.top_k(logits, min(top_k, logits.shape[-1]))[0][:, -1:]
    logits = jnp.where(logits >= kth, logits, -jnp.inf)
  return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


class Decoder:
  """The jitted decoding functions of one model; `params` are the unboxed parameters
  (variables['params']). Each function compiles once per batch size (prefill once per chunk
  length: `prefill_windows` and the remainder)."""

  def __init__(self, model: DecoderLM, params: dict, prefill_windows: int = 8):
    self.model, self.params = model, params
    self.window_length = model.window_length
    self.prefill_windows = max(int(prefill_windows), 1)
    self._feed, self._windows, self._generate, self._close = _compiled(model)

  def start(self, batch_size: int, memory: dict | None = None) -> DecodeState:
    """Lanes at the start of a document (memory: carried from elsewhere, else fresh)."""
    model = self.model
    return DecodeState(
        memory=model.init_memory(batch_size) if memory is None else memory,
        cache=model.init_cache(batch_size),
        window=jnp.zeros((batch_size, self.window_length), jnp.int32),
        doc_start=jnp.ones((batch_size,), bool),
        logits=jnp.zeros((batch_size, model.vocab_size), jnp.float32))

  def feed(self, state: DecodeState, tokens: jax.Array) -> DecodeState:
    """Feeds one token per lane (int32[B]); a window that fills up updates the memory."""
    return self._feed(self.params, state, jnp.asarray(tokens, jnp.int32))

  def prefill(self, state: DecodeState, tokens: jax.Array) -> DecodeState:
    """Feeds int32[B, P] tokens: up to the next window boundary one at a time, then whole
    windows with the scanned model (`prefill_windows` per call), then the rest one at a time."""
    tokens = np.asarray(tokens, np.int32)
    w, position = self.window_length, 0
    filled = int(state.cache['index'])
    while filled and position < tokens.shape[1]:  # finish a window begun earlier
      state = self.feed(state, tokens[:, position])
      position, filled = position + 1, (filled + 1) % w
    while tokens.shape[1] - position >= w:
      count = min(self.prefill_windows, (tokens.shape[1] - position) // w)
      chunk = tokens[:, position:position + count * w]
      state = self._windows(self.params, state, jnp.asarray(chunk))
      position += count * w
    for t in range(position, tokens.shape[1]):
      state = self.feed(state, tokens[:, t])
    return state

  def generate(self, state: DecodeState, num_tokens: int, rng: jax.Array,
               temperature: float = 1.0, top_k: int = 0) -> tuple[np.ndarray, DecodeState]:
    """Samples `num_tokens` tokens per lane from `state` (which must have been fed at least one
    token). Token i is drawn with fold_in(rng, i). Returns (int32[B, n], state).

    One compiled loop per stretch inside a window, with the memory a loop constant (not carried
    through every step), then the window's memory update: at most 3 loop lengths compile."""
    out, done = [], 0
    index = int(state.cache['index'])
    sample = dict(temperature=float(temperature), top_k=int(top_k))
    while done < num_tokens:
      steps = min(num_tokens - done, self.window_length - index)
      state, tokens = self._generate(self.params, state, rng, jnp.int32(done), steps=steps,
                                     **sample)
      out.append(np.asarray(tokens))
      done, index = done + steps, index + steps
      if index == self.window_length:
        state, index = self._close(self.params, state), 0
    batch = state.window.shape[0]
    return (np.concatenate(out, axis=1) if out else np.zeros((batch, 0), np.int32)), state

  def logits_by_token(self, tokens: jax.Array, doc_start: jax.Array | None = None,
                      state: DecodeState | None = None) -> tuple[np.ndarray, DecodeState]:
    """The generation path's logits of every position, feeding int32[B, T] one token at a time
    (teacher forcing); doc_start bool[B, ceil(T / W)] marks the windows that start a document
    (default: only the first). Returns (float32[B, T, V], state)."""
    tokens = np.asarray(tokens, np.int32)
    batch, length = tokens.shape
    w = self.window_length
    state = self.start(batch) if state is None else state
    logits = []
    for t in range(length):
      if t % w == 0 and doc_start is not None:
        state = state._replace(doc_start=jnp.asarray(doc_start)[:, t // w])
      state = self.feed(state, tokens[:, t])
      logits.append(state.logits)
    return np.stack([np.asarray(l) for l in logits], axis=1), state


@functools.lru_cache(maxsize=None)
def _compiled(model: DecoderLM):
  """The jitted functions of a model, shared by every Decoder of it (compiled once)."""
  return (jax.jit(functools.partial(_feed, model)), jax.jit(functools.partial(_windows, model)),
          jax.jit(functools.partial(_generate, model),
                  static_argnames=('steps', 'temperature', 'top_k')),
          jax.jit(functools.partial(_close_window, model)))


def _step(model: DecoderLM, params: dict, state: DecodeState, tokens: jax.Array) -> DecodeState:
  """One token per lane int32[B] at slot cache['index'] (which must be < W); memory unchanged."""
  logits, cache = model.apply({'params': params}, tokens[:, None], state.memory,
                              state.doc_start[:, None], cache=state.cache)
  window = jax.lax.dynamic_update_slice_in_dim(state.window, tokens[:, None],
                                               state.cache['index'], axis=1)
  return state._replace(cache=cache, window=window, logits=logits[:, 0])


def _close_window(model: DecoderLM, params: dict, state: DecodeState) -> DecodeState:
  """The full window's memory update (the training forward pass on it) and a fresh cache."""
  _, memory = model.apply({'params': params}, state.window, state.memory,
                          state.doc_start[:, None])
  return state._replace(memory=memory, cache=dict(state.cache, index=jnp.zeros_like(
      state.cache['index'])), doc_start=jnp.zeros_like(state.doc_start))


def _feed(model: DecoderLM, params: dict, state: DecodeState, tokens: jax.Array) -> DecodeState:
  """`_step`, then `_close_window` if that filled the window."""
  state = _step(model, params, state, tokens)
  return jax.lax.cond(state.cache['index'] == model.window_length,
                      functools.partial(_close_window, model, params), lambda s: s, state)


def _windows(model: DecoderLM, params: dict, state: DecodeState,
             tokens: jax.Array) -> DecodeState:
  """Whole windows int32[B, n * W] through the scanned model from a window boundary: the memory
  after them and the logits after the last token; only the first window may start a document."""
  n = tokens.shape[1] // model.window_length
  doc_start = jnp.zeros((tokens.shape[0], n), bool).at[:, 0].set(state.doc_start)
  logits, memory = model.apply({'params': params}, tokens, state.memory, doc_start)
  return state._replace(memory=memory, doc_start=jnp.zeros_like(state.doc_start),
                        logits=logits[:, -1])


def _generate(model: DecoderLM, params: dict, state: DecodeState, rng: jax.Array,
              first: jax.Array, *, steps: int, temperature: float,
              top_k: int) -> tuple[DecodeState, jax.Array]:
  """`steps` rounds of: sample from the logits, feed the sample; all inside one window (the
  caller closes it), so only the cache, the window and the logits change from step to step.
  -> (state, int32[B, steps])."""
  def body(carry, step):
    cache, window, logits = carry
    token = sample_token(logits, jax.random.fold_in(rng, step), temperature, top_k)
    moved = _step(model, params, state._replace(cache=cache, window=window), token)
    return (moved.cache, moved.window, moved.logits), token

  (cache, window, logits), tokens = jax.lax.scan(
      body, (state.cache, state.window, state.logits),
      first + jnp.arange(steps, dtype=jnp.int32))
  return state._replace(cache=cache, window=window, logits=logits), tokens.T
