"""`make_lanes`: the one call the trainer and the evaluator use to get batches.

Task names are `<corpus>_<vocabulary>`: corpus in books, math, code, pg19, synthetic, text_dir;
vocabulary in bytes, spm16k. The seqio registrations in tasks.py use the same names and sources.
"""

from __future__ import annotations

import logging

import numpy as np

from melodi_jax.data import mqar, recall, sources, tokens
from melodi_jax.data.lanes import LaneStream, check_shapes
from melodi_jax.data.paths import data_root
from melodi_jax.data.vocab import VOCABULARIES, Vocabulary, get_vocabulary
from melodi_jax.errors import UserError

# recall.py (bytes): recall = language modelling on the recall documents, recallkeys = the same
# documents with loss only on what must be recalled (question key digits, echo repeats).
# mqar.py (bytes): multi-query associative recall across windows, gin-configured (MQARConfig).
CORPORA = sources.CORPORA + ("pg19", "synthetic", "text_dir", "recall", "recallkeys", "mqar")
TASKS = tuple(f"{c}_{v}" for c in CORPORA for v in VOCABULARIES)


def parse_task(task: str) -> tuple[str, str]:
    """'books_spm16k' -> ('books', 'spm16k'); UserError for unknown names."""
    corpus, _, vocabulary = task.rpartition("_")
    if corpus not in CORPORA or vocabulary not in VOCABULARIES:
        raise UserError(f"unknown task {task!r}: choose from {', '.join(TASKS)}")
    return corpus, vocabulary


def task_vocabulary(task: str) -> Vocabulary:
    """The vocabulary of a task name (its size is the model's vocab_size)."""
    return get_vocabulary(parse_task(task)[1])


def document_source(corpus: str, split: str, *, text_dir: str | None = None,
                    tfds_data_dir: str | None = None,
                    data_dir: str | None = None) -> sources.DocumentSource:
    """The text documents of `corpus` for `split`: the recall task's (built from the books
    corpus) or a plain source (sources.source_for)."""
    if corpus == "recall":
        return recall.recall_source(split, data_dir)
    return sources.source_for(corpus, split, text_dir=text_dir, tfds_data_dir=tfds_data_dir,
                              data_dir=data_dir)


def make_lanes(task: str | None, split: str, *, text_dir: str | None = None,
               batch_size: int, segment_length: int, window_length: int, train: bool,
               seed: int = 0, shard_index: int = 0, num_shards: int = 1,
               tfds_data_dir: str | None = None, vocabulary: str = "bytes",
               state: dict | None = None, data_dir: str | None = None) -> LaneStream:
    """A LaneStream over one split of a task, sharded for data parallelism.

    Args:
      task: a task name such as 'books_bytes'; None with `text_dir` means 'text_dir_<vocabulary>'.
      split: 'train', 'validation' or 'test'.
      text_dir: a folder of text files (one document per file), for text_dir tasks.
      batch_size: lanes B of this shard (per data-parallel replica).
      segment_length, window_length: T and W; W must divide T.
      train: shuffle documents per epoch and cycle forever; else read each document once, in order.
      seed, shard_index, num_shards: the shuffle seed and this replica's share of the documents.
      tfds_data_dir: folder with a prepared TFDS pg19, for pg19 tasks.
      vocabulary: vocabulary for `text_dir` when `task` is None.
      state: a `LaneStream.state()` to resume from.
      data_dir: data root (default $MELODI_DATA_DIR, else <repo>/data).

    Returns:
      A LaneStream; `vocab_size`, `vocabulary` (encode/decode) and `token_bytes` (float32[V]
      UTF-8 bytes per token id) come with it; every batch carries `bytes` float32[B].
    """
    check_shapes(batch_size=batch_size, segment_length=segment_length,
                 window_length=window_length)
    if task is None:
        if not text_dir:
            raise UserError("pass --task=NAME or --text_dir=PATH to choose the data")
        task = f"text_dir_{vocabulary}"
    corpus, vocabulary_name = parse_task(task)
    if text_dir and corpus != "text_dir":
        raise UserError(f"--text_dir given with task {task!r}: pass only one of them")
    if corpus == "recallkeys" and vocabulary_name != "bytes":
        raise UserError(f"{task}: the recall task's key positions are byte offsets; use "
                        "recallkeys_bytes")
    vocab = get_vocabulary(vocabulary_name)
    if corpus == "mqar":
        return _mqar_lanes(task, split, vocabulary_name, vocab, batch_size=batch_size,
                           segment_length=segment_length, window_length=window_length,
                           train=train, seed=seed, shard_index=shard_index,
                           num_shards=num_shards, state=state)
    source = document_source("recall" if corpus == "recallkeys" else corpus, split,
                             text_dir=text_dir, tfds_data_dir=tfds_data_dir, data_dir=data_dir)
    cache_dir = data_root(data_dir) / "cache" / "tokens"
    documents = tokens.load_documents(source, vocab, cache_dir=cache_dir)
    if corpus == "recallkeys":
        documents = recall.with_recall_weights(documents, split, data_dir)
    short = int(np.sum(documents.lengths() < window_length))
    if short:
        logging.warning("%s: %d of %d documents are shorter than one window (%d tokens); each "
                        "still takes a whole window", source.description, short, len(documents),
                        window_length)
    stream = LaneStream(documents, batch_size=batch_size, segment_length=segment_length,
                        window_length=window_length, train=train, seed=seed,
                        shard_index=shard_index, num_shards=num_shards,
                        token_bytes=vocab.token_bytes, vocab_size=vocab.vocab_size, state=state,
                        task=task, vocabulary=vocab)
    return stream


def _mqar_lanes(task: str, split: str, vocabulary_name: str, vocab: Vocabulary, *,
                window_length: int, **lane_args) -> LaneStream:
    """Lanes over the MQAR documents of the gin-bound `mqar.MQARConfig`."""
    config = mqar.MQARConfig()
    if vocabulary_name != "bytes":
        raise UserError(f"{task}: the MQAR task's token ids are in the bytes vocabulary; use "
                        "mqar_bytes")
    if config.window_length != window_length:
        raise UserError(f"MQARConfig.window_length = {config.window_length} but the model reads "
                        f"windows of {window_length}: bind MQARConfig.window_length = "
                        f"{window_length}")
    return LaneStream(mqar.documents(config, split), window_length=window_length,
                      token_bytes=vocab.token_bytes, vocab_size=vocab.vocab_size, task=task,
                      vocabulary=vocab, **lane_args)
