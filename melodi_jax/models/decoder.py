"""DecoderLM: embed -> the layer stack scanned over windows (memory as the carry) -> logits.

Window-major order: window k runs the whole stack, then window k+1. One `nn.scan` whose carry is
the whole memory pytree, so compile time does not grow with the number of windows N and the reset
at document starts happens in one place. With `ModelConfig.remat` the same `WindowStack` runs in
`recompute.window_scan` instead (same values and gradients; long-term FIFOs saved once; dropout
keys are then split per window here, so with dropout on the random masks differ from the
`nn.scan` path's). What a window keeps for the backward pass is `ModelConfig.remat_saves`:
'nothing' recomputes the whole window there; 'dots' keeps the outputs of its weight matmuls and
'all_dots' also attention's QK^T and PV, and each recomputes only the rest: fewer FLOPs, more
memory per window. With `ModelConfig.remat_budget_mib` a policy that would keep more than that
over all windows falls back to recomputing whole windows.
What the attention sows for diagnostics (layers/attention.py `INTERMEDIATES`, when the caller makes
that collection mutable) comes out stacked per window, [N, ...]; such calls take the `nn.scan`
path even with remat.
"""

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp

from melodi_jax.layers import attention_kernel, axes
from melodi_jax.layers.attention import INTERMEDIATES, WindowCache
from melodi_jax.layers.norms import RMSNorm
from melodi_jax.models import recompute, state
from melodi_jax.models.config import ModelConfig


# ModelConfig.remat_saves -> what a checkpointed window keeps for its backward pass. Both policies
# also keep the attention kernel's per-row log-sum-exp, from which its recomputing blocks
# (cross-attention to a large memory) rebuild their probabilities: kept, it spares keeping their
# [rows, keys] QK^T to recompute it from.
_LOG_SUM_EXP = jax.checkpoint_policies.save_only_these_names(attention_kernel.LOG_SUM_EXP)
SAVED = {'nothing': None,  # the whole window is recomputed
         'dots': jax.checkpoint_policies.save_from_both_policies(   # weight matmuls
             jax.checkpoint_policies.dots_with_no_batch_dims_saveable, _LOG_SUM_EXP),
         'all_dots': jax.checkpoint_policies.save_from_both_policies(  # and attention's QK^T, PV
             jax.checkpoint_policies.dots_saveable, _LOG_SUM_EXP)}


class WindowStack(nn.Module):
  """The scan body: resets finished lanes' memory, then runs every layer on one window, the first
  one with the stack plan's window extras (`ModelConfig.window_extras`).

  Called with a `cache` (state.initial_cache) it decodes one token of the current window instead.
  """
  config: ModelConfig
  deterministic: bool = True

  @nn.compact
  def __call__(self, memory: dict, window: tuple[jax.Array, jax.Array],
               cache: dict | None = None) -> tuple[dict, jax.Array]:
    """memory: the carry; window: (x [B, W, d], doc_start bool[B]) -> (memory, y [B, W, d]).

    With `cache` (decoding): x is the token [B, 1, d] at slot cache['index'] of a window whose
    memory is `memory` (before the window: it is reset here too); returns (the cache with this
    token's keys/values and index + 1, y [B, 1, d]). Memory is not written while decoding.
    """
    config = self.config
    x, doc_start = window
    batch = x.shape[0]
    memory = state.reset(memory, state.initial_memory(config, batch), doc_start)
    extras = {}
    if cache is None:  # (decoding reads no extras)
      for extra in config.window_extras():
        table = self.param(extra.param, extra.init, (extra.rows, config.model_dim), jnp.float32)
        extras[extra.key] = jnp.broadcast_to(table.astype(x.dtype), (batch,) + table.shape)
    new_memory = {}
    for index, options in enumerate(config.layer_options()):
      name = state.layer_name(index)
      layer_cache = None
      if cache is not None:
        layer_cache = WindowCache(cache[name]['keys'], cache[name]['values'], cache['index'])
      x, extras, new_memory[name] = options.module(config, name)(
          x, extras, memory[name], self.deterministic, layer_cache)
    if cache is not None:  # the layers returned their updated caches
      new_cache = {name: {'keys': c.keys, 'values': c.values} for name, c in new_memory.items()}
      return dict(new_cache, index=cache['index'] + 1), x
    return new_memory, x


class DecoderLM(nn.Module):
  """A window-recurrent decoder language model: `__call__` states the contract, WORKSPACE.md
  ('How a window flows through the stack') what happens inside."""
  config: ModelConfig

  @property
  def window_length(self) -> int:
    return self.config.window_length

  @property
  def vocab_size(self) -> int:
    return self.config.vocab_size

  def init_memory(self, batch_size: int) -> dict:
    """The memory of `batch_size` fresh lanes: a pytree whose leaves are all [B, ...]."""
    return state.initial_memory(self.config, batch_size)

  def init_cache(self, batch_size: int) -> dict:
    """The decoding cache of an empty window (see __call__'s `cache`)."""
    return state.initial_cache(self.config, batch_size)

  @nn.compact
  def __call__(self, tokens: jax.Array, memory: dict, doc_start: jax.Array,
               train: bool = False, cache: dict | None = None) -> tuple[jax.Array, dict]:
    """tokens int32[B, T], memory, doc_start bool[B, N] -> (logits float32[B, T, V], memory).

    T must be a multiple of W; N = T / W. With train=True dropout is on (rngs={'dropout': key}).

    Decoding (models/decoding.py): with `cache` (init_cache, then as returned), tokens int32[B, 1]
    is the token at slot cache['index'] of the current window, `memory` the memory before that
    window and doc_start bool[B, 1] whether the window starts a document; returns
    (logits float32[B, 1, V], the cache with this token's keys/values). The memory is not
    changed: once the window is full, apply it whole (T = W) to the same memory.
    """
    config = self.config
    batch, length = tokens.shape
    window = config.window_length
    if cache is None and length % window:
      raise ValueError(f'segment length {length} is not a multiple of ModelConfig.window_length '
                       f'= {window}: change the segment length or the window')
    num_windows = 1 if cache is not None else length // window
    if doc_start.shape != (batch, num_windows):
      raise ValueError(f'doc_start has shape {doc_start.shape}, expected (B, N) = '
                       f'{(batch, num_windows)}')
    if cache is not None and length != 1:
      raise ValueError(f'decoding takes one token per lane at a time, got tokens {tokens.shape}')

    embed = nn.Embed(config.vocab_size, config.model_dim, name='embed',
                     embedding_init=nn.with_logical_partitioning(
                         nn.initializers.normal(1.0), (axes.VOCAB, axes.EMBED)))
    x = embed(tokens).astype(config.dtype)

    if cache is not None:  # the same parameters as the scan's (variable_broadcast='params')
      cache, y = WindowStack(config, name='stack')(memory, (x, jnp.asarray(doc_start, bool)[:, 0]),
                                                   cache)
    else:
      x = x.reshape(batch, num_windows, window, config.model_dim).swapaxes(0, 1)  # [N, B, W, d]
      windows = (x, jnp.asarray(doc_start, bool).T)
      recording = self.is_mutable_collection(INTERMEDIATES)
      if config.remat and not self.is_initializing() and not recording:
        memory, y = self._recomputing_scan(memory, windows, train)
      else:  # (initialization always takes this path: it creates the 'stack' parameters)
        scan = nn.scan(WindowStack, variable_broadcast='params',
                       variable_axes={INTERMEDIATES: 0},
                       split_rngs={'params': False, 'dropout': True},
                       in_axes=0, out_axes=0, length=num_windows)
        memory, y = scan(config, deterministic=not train, name='stack')(memory, windows)
      y = y.swapaxes(0, 1).reshape(batch, length, config.model_dim)
    y = RMSNorm(dtype=config.dtype, name='final_norm')(y)
    if config.tie_embeddings:
      logits = embed.attend(y) * config.model_dim ** -0.5
    else:
      logits = nn.Dense(config.vocab_size, use_bias=False, dtype=config.dtype,
                        name='logits', kernel_init=nn.with_logical_partitioning(
                            nn.initializers.variance_scaling(1.0, 'fan_in', 'truncated_normal'),
                            (axes.EMBED, axes.VOCAB)))(y)
    return logits.astype(jnp.float32), (memory if cache is None else cache)

  def _recomputing_scan(self, memory: dict, windows: tuple, train: bool) -> tuple[dict, jax.Array]:
    """ModelConfig.remat: the scan of the 'stack' parameters over windows that keeps per window
    what ModelConfig.remat_saves says and recomputes the rest in the backward pass, the long-term
    FIFOs rebuilt there from the slots they gained (models/recompute.py)."""
    config = self.config
    num_windows = windows[0].shape[0]
    keys = None
    if train:  # (layers draw dropout keys whenever train=True)
      keys = jax.random.split(self.make_rng('dropout'), num_windows)
      if jnp.issubdtype(keys.dtype, jax.dtypes.prng_key):
        keys = jax.random.key_data(keys)

    def one_window(params, carry, inputs):
      window, key = inputs
      rngs = {} if key is None else {'dropout': key}
      return WindowStack(config, deterministic=not train).apply({'params': params}, carry, window,
                                                                rngs=rngs)

    params, xs = self.variables['params']['stack'], (windows, keys)
    policy = SAVED[config.remat_saves]
    if policy is not None and config.remat_budget_mib:
      first = jax.tree.map(lambda a: a[0], xs)
      kept = num_windows * recompute.kept_bytes(one_window, params, memory, first, policy)
      within = kept <= config.remat_budget_mib * 2 ** 20
      logging.info('remat: %d windows would keep %.1f MiB (ModelConfig.remat_budget_mib = %g): '
                   '%s', num_windows, kept / 2 ** 20, config.remat_budget_mib,
                   f'keeping {config.remat_saves}' if within else 'recomputing whole windows')
      policy = policy if within else None
    return recompute.window_scan(one_window, params, memory, xs,
                                 state.fifo_increments(config, memory), recompute.Saves(policy))
