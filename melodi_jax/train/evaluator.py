"""The evaluation protocol, shared by `python -m melodi_jax.evaluate` and evals during training:
lanes unshuffled, every document read to its end, memory carried across segments and reset at
document starts (the model resets where `doc_start` is set); sums kept in float64 on the host.
Besides the totals, the same sums per bucket of document position (train/positions.py)."""
from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from melodi_jax.models import footprint
from melodi_jax.train import inputs, metrics, partitioning, positions


@dataclasses.dataclass
class EvalResult:
  """Totals over the split and the sizes they were measured with."""
  task: str
  split: str
  step: int
  tokens: float            # predicted (weighted) target tokens
  bytes: float             # bytes of every document read (its first token is not predicted)
  predicted_bytes: float   # bytes of the predicted tokens: bits_per_byte is over these
  documents: int           # documents read
  nats: float              # summed -log p over the predicted tokens
  nats_per_token: float
  perplexity: float
  bits_per_byte: float
  batches: int
  complete: bool           # every document read to its end (False: capped by max_batches)
  batch_size: int          # lanes
  segment_length: int      # T
  window_length: int       # W
  memory_floats_per_lane: int  # float elements, as models/footprint.py counts (no masks)
  memory_shapes: dict[str, list[int]]  # carried memory leaves, per lane (without B)
  protocol: str = ('lanes unshuffled; every document read to its end; memory carried across '
                   'segments and reset at document starts')
  # The totals split by the predicted token's index inside its document (0 = the first token,
  # never predicted): one dict per bucket with start, end (None: open), label, tokens, bytes
  # (predicted bytes), nats, nats_per_token, bits_per_byte (None when the bucket is empty).
  # Bucket sums add up to the totals.
  by_position: list[dict[str, Any]] = dataclasses.field(default_factory=list)

  def scalars(self) -> dict[str, float]:
    return {'nats_per_token': self.nats_per_token, 'perplexity': self.perplexity,
            'bits_per_byte': self.bits_per_byte, 'tokens': self.tokens, 'bytes': self.bytes}


def memory_shapes(abstract_memory: Any) -> dict[str, list[int]]:
  """The carried memory's leaves and their shapes per lane (without B)."""
  return {jax.tree_util.keystr(path): list(leaf.shape[1:])
          for path, leaf in jax.tree_util.tree_leaves_with_path(abstract_memory)}


class Evaluator:
  """Compiles the eval step once; `run(params, step)` reads a fresh stream through to its end."""

  def __init__(self, model, mesh, params_sharding, spec: inputs.StreamSpec, *,
               stream_factory: inputs.StreamFactory | None = None,
               max_batches: int | None = None,
               position_buckets: Sequence[int] = positions.DEFAULT_BOUNDARIES):
    self.model, self.spec, self.max_batches = model, spec, max_batches
    self.position_buckets = positions.check_boundaries(position_buckets)
    boundaries = np.asarray(self.position_buckets, np.int32)
    self._factory = stream_factory
    partitioning.check_batch_divides(spec.batch_size, mesh, 'the eval batch size')
    self._abstract_memory = jax.eval_shape(lambda: model.init_memory(spec.batch_size))
    self._memory_floats = footprint.measure_model(model, '').paper_floats  # no masks/counters
    memory_sharding = partitioning.lane_shardings(self._abstract_memory, mesh)
    self._batch_sharding = partitioning.batch_sharding(mesh)
    self._init_memory = jax.jit(lambda: model.init_memory(spec.batch_size),
                                out_shardings=memory_sharding)

    def eval_step(params, memory, batch, token_bytes, position):
      """position int32[B, T]: document index of each target (train/positions.py)."""
      logits, memory = model.apply({'params': params}, batch['inputs'], memory,
                                   batch['doc_start'])
      sums = metrics.loss_sums(logits, batch['targets'], batch['loss_weights'], batch['bytes'])
      bucket = jnp.sum(position[..., None] >= boundaries, axis=-1)              # int32[B, T]
      in_bucket = jax.nn.one_hot(bucket, len(boundaries) + 1) * batch['loss_weights'][..., None]
      nats = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32),
                                                             batch['targets'])
      sums['bucket_nats'] = jnp.einsum('bt,btk->k', nats, in_bucket)
      sums['bucket_tokens'] = jnp.sum(in_bucket, axis=(0, 1))
      sums['bucket_bytes'] = jnp.einsum('bt,btk->k', token_bytes[batch['targets']], in_bucket)
      # A document's first token has no target, but its bytes belong to the text read.
      first_tokens = batch['inputs'][:, ::spec.window_length]                # int32[B, N]
      sums['first_token_bytes'] = jnp.sum(jnp.where(batch['doc_start'],
                                                    token_bytes[first_tokens], 0.0))
      sums['documents'] = jnp.sum(batch['doc_start'].astype(jnp.float32))
      return memory, sums

    self._eval_step = jax.jit(
        eval_step,
        in_shardings=(params_sharding, memory_sharding, self._batch_sharding,
                      partitioning.replicated(mesh), self._batch_sharding),
        out_shardings=(memory_sharding, partitioning.replicated(mesh)), donate_argnums=(1,))

  def open(self):
    """Opens the stream (raises the data layer's errors before any work is done)."""
    return inputs.open_stream(self.spec, self._factory, self.model.vocab_size)

  def run(self, params, step: int, stream=None) -> EvalResult:
    stream = stream if stream is not None else self.open()
    token_bytes = getattr(stream, 'token_bytes', None)  # float32[V]: UTF-8 bytes per token id
    if token_bytes is None:
      token_bytes = np.ones([self.model.vocab_size], np.float32)
    token_bytes = jnp.asarray(token_bytes, jnp.float32)
    memory = self._init_memory()
    lanes = self.spec.batch_size // jax.process_count()
    tracker = positions.DocumentPositions(lanes, self.spec.segment_length,
                                          self.spec.window_length)
    sums, batches, complete = [], 0, True
    while True:
      if self.max_batches is not None and batches >= self.max_batches:
        complete = False
        break
      batch, _ = inputs.next_batch(stream)
      if inputs.all_processes_done(batch is None):
        break
      if batch is None:  # this process has read all its documents, others have not
        batch = inputs.empty_batch(self.spec)
      position = tracker.next(np.asarray(batch['doc_start']))
      assert not np.any((position < 0) & (np.asarray(batch['loss_weights']) > 0)), (
          'a weighted target before its lane\'s first doc_start: eval streams start every lane '
          'at a document start')
      position = jax.make_array_from_process_local_data(
          self._batch_sharding, np.maximum(position, 0).astype(np.int32))
      memory, batch_sums = self._eval_step(
          params, memory, inputs.global_batch(batch, self._batch_sharding), token_bytes, position)
      sums.append(batch_sums)
      batches += 1
    keys = ('nats', 'tokens', 'bytes', 'first_token_bytes', 'documents')
    host_sums = jax.device_get(sums)
    totals = {k: float(np.sum([np.float64(s[k]) for s in host_sums])) for k in keys}
    nats_per_token = totals['nats'] / totals['tokens'] if totals['tokens'] else float('nan')
    by_position = _bucket_rows(self.position_buckets, host_sums)
    return EvalResult(
        task=self.spec.name, split=self.spec.split, step=int(step), tokens=totals['tokens'],
        bytes=totals['bytes'] + totals['first_token_bytes'], predicted_bytes=totals['bytes'],
        documents=int(totals['documents']), nats=totals['nats'], nats_per_token=nats_per_token,
        perplexity=math.exp(nats_per_token) if math.isfinite(nats_per_token) else float('nan'),
        bits_per_byte=metrics.bits_per_byte(totals['nats'], totals['bytes']), batches=batches,
        complete=complete, batch_size=self.spec.batch_size,
        segment_length=self.spec.segment_length, window_length=self.spec.window_length,
        memory_floats_per_lane=self._memory_floats,
        memory_shapes=memory_shapes(self._abstract_memory), by_position=by_position)


def _bucket_rows(boundaries: Sequence[int], host_sums: list[dict]) -> list[dict[str, Any]]:
  """One row per position bucket from the per-batch bucket sums (summed in float64)."""
  def total(key):
    return np.sum([np.asarray(s[key], np.float64) for s in host_sums], axis=0) if host_sums else (
        np.zeros([len(boundaries) + 1]))
  nats, tokens, num_bytes = total('bucket_nats'), total('bucket_tokens'), total('bucket_bytes')
  rows = []
  for k, (start, end) in enumerate(positions.bucket_edges(boundaries)):
    rows.append({'start': start, 'end': end, 'label': positions.bucket_label(start, end),
                 'tokens': float(tokens[k]), 'bytes': float(num_bytes[k]),
                 'nats': float(nats[k]),
                 # None (JSON null) for an empty bucket: no document reaches that far.
                 'nats_per_token': float(nats[k] / tokens[k]) if tokens[k] else None,
                 'bits_per_byte': (metrics.bits_per_byte(float(nats[k]), float(num_bytes[k]))
                                   if num_bytes[k] else None)})
  return rows


def write_result(workdir: str, result: EvalResult, suffix: str = '') -> str:
  """Writes DIR/eval/<task>_<split>_<step><suffix>.json atomically (process 0 only); returns the
  path."""
  path = os.path.join(workdir, 'eval', f'{result.task}_{result.split}_{result.step}{suffix}.json')
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + '.tmp', 'w', encoding='utf-8') as f:
      json.dump(dataclasses.asdict(result), f, indent=2)
      f.write('\n')
    os.replace(path + '.tmp', path)
  return path
