"""DecoderLM: embed -> the layer stack scanned over windows (memory as the carry) -> logits.

Window-major order: window k runs the whole stack, then window k+1. One `nn.scan` whose carry is
the whole memory pytree, so compile time does not grow with the number of windows N and the reset
at document starts happens in one place.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from melodi_jax.layers import axes
from melodi_jax.layers.norms import RMSNorm
from melodi_jax.models import state
from melodi_jax.models.config import ModelConfig
from melodi_jax.models.melodi_layer import SUMMARIES


class WindowStack(nn.Module):
  """The scan body: resets finished lanes' memory, then runs every layer on one window."""
  config: ModelConfig
  deterministic: bool = True

  @nn.compact
  def __call__(self, memory: dict, window: tuple[jax.Array, jax.Array]) -> tuple[dict, jax.Array]:
    """memory: the carry; window: (x [B, W, d], doc_start bool[B]) -> (memory, y [B, W, d])."""
    config = self.config
    x, doc_start = window
    batch = x.shape[0]
    memory = state.reset(memory, state.initial_memory(config, batch), doc_start)
    extras = {}
    if config.stack.summary_tokens:
      table = self.param('summary_tokens', nn.initializers.normal(1.0),
                         (config.stack.summary_tokens, config.model_dim), jnp.float32)
      extras[SUMMARIES] = jnp.broadcast_to(table.astype(x.dtype), (batch,) + table.shape)
    new_memory = {}
    for index, options in enumerate(config.layer_options()):
      name = state.layer_name(index)
      x, extras, new_memory[name] = options.module(config, name)(
          x, extras, memory[name], self.deterministic)
    return new_memory, x


class DecoderLM(nn.Module):
  """A window-recurrent decoder language model (see DESIGN §3 for the contract)."""
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

  @nn.compact
  def __call__(self, tokens: jax.Array, memory: dict, doc_start: jax.Array,
               train: bool = False) -> tuple[jax.Array, dict]:
    """tokens int32[B, T], memory, doc_start bool[B, N] -> (logits float32[B, T, V], memory).

    T must be a multiple of W; N = T / W. With train=True dropout is on (rngs={'dropout': key}).
    """
    config = self.config
    batch, length = tokens.shape
    window = config.window_length
    if length % window:
      raise ValueError(f'segment length {length} is not a multiple of ModelConfig.window_length '
                       f'= {window}: change the segment length or the window')
    num_windows = length // window
    if doc_start.shape != (batch, num_windows):
      raise ValueError(f'doc_start has shape {doc_start.shape}, expected (B, N) = '
                       f'{(batch, num_windows)}')

    embed = nn.Embed(config.vocab_size, config.model_dim, name='embed',
                     embedding_init=nn.with_logical_partitioning(
                         nn.initializers.normal(1.0), (axes.VOCAB, axes.EMBED)))
    x = embed(tokens).astype(config.compute_dtype)
    x = x.reshape(batch, num_windows, window, config.model_dim).swapaxes(0, 1)  # [N, B, W, d]

    body = WindowStack
    if config.remat:
      body = nn.remat(body, prevent_cse=False)
    scan = nn.scan(body, variable_broadcast='params', split_rngs={'params': False, 'dropout': True},
                   in_axes=0, out_axes=0, length=num_windows)
    memory, y = scan(config, deterministic=not train, name='stack')(
        memory, (x, jnp.asarray(doc_start, bool).T))
    y = y.swapaxes(0, 1).reshape(batch, length, config.model_dim)
    y = RMSNorm(dtype=config.compute_dtype, name='final_norm')(y)
    if config.tie_embeddings:
      logits = embed.attend(y) * config.model_dim ** -0.5
    else:
      logits = nn.Dense(config.vocab_size, use_bias=False, dtype=config.compute_dtype,
                        name='logits', kernel_init=nn.with_logical_partitioning(
                            nn.initializers.variance_scaling(1.0, 'fan_in', 'truncated_normal'),
                            (axes.EMBED, axes.VOCAB)))(y)
    return logits.astype(jnp.float32), memory
