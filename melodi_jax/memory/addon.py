"""The interface of a memory added to a Transformer-XL layer (models/xl_layer.py).

Memorizing's kNN memory, Block-Recurrent states and MemLong's retrieval memory each implement it;
the layer stays one module: sliding-window attention + FFN, plus what the addon reads and writes.
"""

from typing import Any, NamedTuple, Protocol, Sequence

import jax

from melodi_jax.layers.attention import Attention, AttentionOutput, KeyGroup


class Reading(NamedTuple):
  """What an addon contributes to the layer's attention: key groups (one softmax with the window
  and the XL cache), a gated cross memory, anything its `write` needs again (`context`), and
  entries for the layers above (`extras`; known before the window, so decoding one token, which
  skips `write`, has them too)."""
  groups: Sequence[KeyGroup] = ()
  cross: KeyGroup | None = None
  context: Any = None
  extras: dict | None = None


class MemoryAddon(Protocol):
  """A memory added to an XL layer; its state lives at memory[layer][addon.key]."""
  key: str

  def attention_options(self) -> dict:
    """Extra fields of the layer's Attention (e.g. cross_gate=True)."""

  def initial_state(self, config: Any, batch_size: int) -> dict:
    """The addon's state at a document start (a ModelConfig is passed); every leaf [B, ...]."""

  def read(self, config: Any, attention: Attention, state: dict, extras: dict,
           deterministic: bool) -> Reading:
    """Called before the attention, inside the layer's compact scope (may create submodules).
    Must depend on the state and extras only, never on the window's tokens: a token decoded
    alone reads the same."""

  def write(self, config: Any, attention: Attention, state: dict, extras: dict,
            reading: Reading, tokens: jax.Array, attended: AttentionOutput,
            deterministic: bool) -> tuple[dict, dict]:
    """After the FFN: tokens [B, W, d] (layer output) -> (state for the next window, extras)."""
