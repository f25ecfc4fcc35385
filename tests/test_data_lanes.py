"""Lanes: order, targets, doc_start, restore, sharding and evaluation coverage."""

import itertools
import json

import numpy as np
import pytest

from melodi_jax.errors import UserError
from melodi_jax.data.lanes import Documents, LaneStream

W, T, B = 4, 12, 3


def _documents(seed=0, count=11):
    """Documents of varied lengths (1 .. 40 tokens), shorter and longer than a window."""
    rng = np.random.default_rng(seed)
    lengths = [1, 3, 4, 5, 40, 17, 8, 2, 29, 12, 7, 33, 6][:count]
    return Documents.from_list([rng.integers(0, 256, n) for n in lengths])


def _stream(documents, **kwargs):
    args = dict(batch_size=B, segment_length=T, window_length=W, train=False)
    args.update(kwargs)
    return LaneStream(documents, **args)


def _lane_documents(batches):
    """Per lane, the documents it produced, rebuilt from doc_start, inputs and weighted targets."""
    inputs = np.concatenate([b["inputs"] for b in batches], axis=1)
    targets = np.concatenate([b["targets"] for b in batches], axis=1)
    weights = np.concatenate([b["loss_weights"] for b in batches], axis=1)
    starts = np.concatenate([b["doc_start"] for b in batches], axis=1)
    lanes = []
    for lane in range(inputs.shape[0]):
        docs = []
        for window in np.flatnonzero(starts[lane]):
            t = window * W
            doc = [int(inputs[lane, t])]
            while t < weights.shape[1] and weights[lane, t] > 0:  # contiguous per document
                doc.append(int(targets[lane, t]))
                t += 1
            docs.append(doc)
        lanes.append(docs)
    return lanes, inputs, targets, weights


def test_eval_covers_every_document_once_in_order():
    documents = _documents()
    stream = _stream(documents)
    batches = list(stream)
    lanes, _, _, weights = _lane_documents(batches)
    produced = sorted(itertools.chain.from_iterable(lanes))
    original = sorted(documents.document(i).tolist() for i in range(len(documents)))
    assert produced == original
    # Every token except each document's first is a weighted target exactly once.
    assert weights.sum() == documents.lengths().sum() - len(documents)
    # Each lane takes its documents in the stream's fixed evaluation order (longest first).
    rank = {tuple(documents.document(d)): r for r, d in enumerate(stream.document_order())}
    assert list(stream.document_order()) == sorted(
        range(len(documents)), key=lambda d: (-len(documents.document(d)), d))
    for docs in lanes:
        order = [rank[tuple(d)] for d in docs]
        assert order == sorted(order)


def test_targets_are_inputs_shifted_across_segments():
    batches = list(_stream(_documents()))
    _, inputs, targets, weights = _lane_documents(batches)
    lane, t = np.nonzero(weights)
    np.testing.assert_array_equal(targets[lane, t], inputs[lane, t + 1])
    # Some weighted target must sit on the last position of a segment (crosses a boundary).
    assert np.any(weights[:, T - 1::T] > 0)


def test_doc_start_marks_exactly_document_starts_and_padding_to_windows():
    documents = _documents()
    stream = _stream(documents)
    batches = list(stream)
    lanes, inputs, _, weights = _lane_documents(batches)
    starts = np.concatenate([b["doc_start"] for b in batches], axis=1)
    assert starts.sum() == len(documents)
    assert batches[0]["doc_start"][:, 0].all()
    for lane, docs in enumerate(lanes):
        windows = np.flatnonzero(starts[lane])
        # Each document starts at the first window after the previous document ends.
        for window, nxt, doc in zip(windows, list(windows[1:]) + [None], docs):
            used = -(-len(doc) // W)
            if nxt is not None:
                assert nxt == window + used
            span = slice(window * W, window * W + len(doc))
            np.testing.assert_array_equal(inputs[lane, span], doc)


def test_bytes_counts_weighted_targets():
    table = np.arange(256, dtype=np.float32) % 3  # a made-up bytes-per-token table
    stream = _stream(_documents(), token_bytes=table)
    for batch in stream:
        expected = (table[batch["targets"]] * batch["loss_weights"]).sum(axis=1)
        np.testing.assert_allclose(batch["bytes"], expected)
        assert batch["bytes"].dtype == np.float32 and batch["inputs"].dtype == np.int32


def test_restore_mid_document_gives_identical_stream():
    documents = _documents()
    for train in (True, False):
        stream = _stream(documents, train=train, seed=5)
        next(stream)
        while all(offset == 0 for _, offset in stream.state()["lanes"]):
            next(stream)
        state = json.loads(json.dumps(stream.state()))
        assert any(offset > 0 for _, offset in state["lanes"]), "want a lane mid-document"
        take = 6 if train else None  # evaluation: the whole remainder, up to StopIteration
        rest = list(itertools.islice(stream, take))
        resumed = list(itertools.islice(_stream(documents, train=train, seed=5, state=state), take))
        assert len(resumed) == len(rest) and rest
        for expected, got in zip(rest, resumed):
            for key in expected:
                np.testing.assert_array_equal(expected[key], got[key])


def test_shards_partition_documents():
    documents = _documents()
    seen = []
    for shard in range(2):
        lanes, *_ = _lane_documents(list(_stream(documents, shard_index=shard, num_shards=2)))
        seen.append({tuple(d) for d in itertools.chain.from_iterable(lanes)})
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == {tuple(documents.document(i)) for i in range(len(documents))}


def test_train_shuffles_documents_and_cycles_epochs():
    documents = _documents()
    stream = _stream(documents, train=True, seed=1)
    batches = [next(stream) for _ in range(40)]
    assert stream.state()["epoch"] >= 2
    lanes, *_ = _lane_documents(batches)
    originals = {tuple(documents.document(i)) for i in range(len(documents))}
    # Every document read whole is one of the corpus documents (segments never shuffled) ...
    complete = [tuple(d) for docs in lanes for d in docs[:-1]]
    assert set(complete) <= originals
    # ... and the order differs from the unshuffled one and between seeds.
    other = _stream(documents, train=True, seed=2)
    assert any(not np.array_equal(a["inputs"], next(other)["inputs"]) for a in batches[:5])


def test_eval_ends_with_padded_lanes_and_count_batches():
    documents = _documents()
    stream = _stream(documents)
    expected = stream.count_batches()
    batches = list(stream)
    assert len(batches) == expected
    assert stream.finished
    with pytest.raises(StopIteration):
        next(stream)
    assert batches[-1]["loss_weights"][:, -1].sum() == 0  # the tail is padding


def test_bad_shapes_and_states_raise_data_error():
    documents = _documents()
    with pytest.raises(UserError, match="must divide"):
        _stream(documents, segment_length=10, window_length=4)
    with pytest.raises(UserError, match="no documents"):
        _stream(_documents(count=2), shard_index=2, num_shards=3)
    state = _stream(documents).state()
    with pytest.raises(UserError, match="batch_size"):
        _stream(documents, batch_size=B + 1, state=state)
    with pytest.raises(UserError, match="train"):
        _stream(documents, train=True, state=state)
