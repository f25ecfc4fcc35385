"""Per-position evaluation: document positions from doc_start across segments and lanes, and the
evaluator's loss per position bucket on a tiny model (bucket sums are the totals, and tokens land
in the bucket of their document position)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from melodi_jax.data.lanes import Documents, LaneStream
from melodi_jax.train import config, evaluator, inputs, partitioning, positions
from melodi_jax.errors import UserError

import test_train_support as support
import zoo


def _positional_documents(lengths, period):
  """Documents whose token at index p is p % period + 1: a target's value names its position."""
  return Documents.from_list([[p % period + 1 for p in range(n)] for n in lengths])


def test_positions_follow_documents_across_segments_and_lanes():
  # Lengths around the window (8) and the segment (32), and long ones spanning many segments.
  lengths = [3, 8, 9, 32, 33, 1, 64, 100, 300, 555, 1000, 17, 31]
  documents = _positional_documents(lengths, period=251)
  stream = LaneStream(documents, batch_size=3, segment_length=32, window_length=8, train=False)
  tracker = positions.DocumentPositions(3, 32, 8)
  checked, longest = 0, 0
  for batch in stream:
    position = tracker.next(batch['doc_start'])
    weighted = batch['loss_weights'] > 0
    np.testing.assert_array_equal(batch['targets'][weighted], position[weighted] % 251 + 1)
    # A lane in the middle of a document continues in the next segment at the stream's offset.
    for lane, (document, offset) in enumerate(stream.state()['lanes']):
      if document >= 0:
        assert tracker._carry[lane] == offset  # pylint: disable=protected-access
    checked += int(weighted.sum())
    longest = max(longest, int(position[weighted].max(initial=0)))
  assert checked == sum(lengths) - len(lengths) and longest == 999


def test_bucket_edges_labels_and_bad_boundaries():
  edges = positions.bucket_edges(positions.DEFAULT_BOUNDARIES)
  assert [positions.bucket_label(*e) for e in edges] == [
      '[0, 256)', '[256, 1k)', '[1k, 4k)', '[4k, 16k)', '[16k, 64k)', '>= 64k']
  for bad in ((256, 256), (1024, 256), (0, 8)):
    with pytest.raises(UserError, match='TrainConfig.eval_position_buckets'):
      config.TrainConfig(eval_position_buckets=bad).validate()


def _tiny_evaluator(stream_factory, spec, boundaries):
  model = support.tiny_model()
  mesh = partitioning.make_mesh((1, 1))
  windows = spec.segment_length // spec.window_length

  def init(rng):
    return model.init(rng, jnp.zeros((spec.batch_size, spec.segment_length), jnp.int32),
                      model.init_memory(spec.batch_size),
                      jnp.ones((spec.batch_size, windows), bool))['params']

  boxed = jax.eval_shape(init, jax.random.key(0))
  # The zoo's MELODI parameters at these paths (its initialisation is compiled once for every
  # test; any parameters do here).
  params = zoo.fill_from('melodi', {'params': nn.meta.unbox(boxed)})['params']
  sharding = partitioning.logical_shardings(boxed, mesh, partitioning.default_rules())
  runner = evaluator.Evaluator(model, mesh, sharding, spec, stream_factory=stream_factory,
                               position_buckets=boundaries)
  return model, params, runner


def _reference_bucket_nats(model, params, stream, boundaries):
  """The eval loop written out on the host: per-token losses, bucketed by the position the
  target's value names (independent of DocumentPositions)."""
  memory = model.init_memory(stream.batch_size)
  nats = np.zeros([len(boundaries) + 1])
  apply = jax.jit(lambda memory, batch: model.apply({'params': params}, batch['inputs'], memory,
                                                    batch['doc_start']))
  for batch in stream:
    logits, memory = apply(memory, batch)
    losses = np.asarray(optax.softmax_cross_entropy_with_integer_labels(logits,
                                                                        batch['targets']))
    weighted = batch['loss_weights'] > 0
    bucket = np.searchsorted(boundaries, batch['targets'] - 1, side='right')
    np.add.at(nats, bucket[weighted], losses[weighted])
  return nats


def test_evaluator_loss_per_position_bucket():
  boundaries = (8, 32)
  lengths = [5, 8, 9, 31, 32, 33, 40, 100, 70]   # < 255: a target's value is position + 1
  documents = _positional_documents(lengths, period=255)
  segment, window, lanes = support.SEGMENT, support.WINDOW, 2

  def factory(task, split, **kwargs):
    del task, split
    return LaneStream(documents, batch_size=kwargs['batch_size'],
                      segment_length=kwargs['segment_length'],
                      window_length=kwargs['window_length'], train=False)

  spec = inputs.StreamSpec(task='hand_built_bytes', split='test', batch_size=lanes,
                           segment_length=segment, window_length=window, train=False)
  model, params, runner = _tiny_evaluator(factory, spec, boundaries)
  result = runner.run(params, step=0)
  rows = result.by_position
  assert [(r['start'], r['end']) for r in rows] == [(0, 8), (8, 32), (32, None)]

  # A document of length n predicts positions 1..n-1.
  expected = [sum(min(n, 8) - 1 for n in lengths),
              sum(max(0, min(n, 32) - 8) for n in lengths),
              sum(max(0, n - 32) for n in lengths)]
  assert [r['tokens'] for r in rows] == expected
  assert [r['bytes'] for r in rows] == expected     # bytes vocabulary: one byte per token
  assert sum(expected) == result.tokens == result.predicted_bytes
  np.testing.assert_allclose(sum(r['nats'] for r in rows), result.nats, rtol=1e-6)
  np.testing.assert_allclose(
      [r['nats'] for r in rows],
      _reference_bucket_nats(model, params, factory(None, None, batch_size=lanes,
                                                    segment_length=segment,
                                                    window_length=window), boundaries),
      rtol=1e-5)
  for row in rows:
    np.testing.assert_allclose(row['bits_per_byte'], row['nats'] / np.log(2) / row['bytes'])
    np.testing.assert_allclose(row['nats_per_token'], row['nats'] / row['tokens'])
