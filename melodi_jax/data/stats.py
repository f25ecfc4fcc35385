"""Corpus statistics and lane packing efficiency of a task split.

  python -m melodi_jax.data.stats --task=books_bytes [--split=train] [--window_length=512]
      [--segment_length=4096] [--batch_size=8] [--text_dir=PATH] [--tfds_data_dir=DIR] [--json]
"""

from __future__ import annotations

import json

import numpy as np
from absl import app, flags

from melodi_jax.data.lanes import LaneStream
from melodi_jax.data.pipeline import make_lanes
from melodi_jax.errors import UserError, exit_on_user_error

PERCENTILES = (10, 50, 90, 99, 100)


def split_stats(stream: LaneStream) -> dict:
    """Documents, tokens, bytes and packing numbers of the documents behind an eval stream.

    Packing efficiency = real tokens / all token slots. Training (lanes never idle) only pads each
    document to a window boundary, so its efficiency is sum(L) / sum(ceil(L / W) * W). Evaluation
    also pads lanes that finished while others still read, counted by simulating the stream.
    """
    documents, w = stream.documents, stream.window_length
    lengths = documents.lengths()
    tokens = int(lengths.sum())
    total_bytes = float(np.sum(stream.token_bytes[np.asarray(documents.tokens)], dtype=np.float64))
    slots_train = int(np.sum(-(-lengths // w) * w))
    eval_batches = stream.count_batches()
    return {
        "task": stream.task, "documents": len(documents), "tokens": tokens,
        "bytes": int(total_bytes), "bytes_per_token": total_bytes / tokens,
        "length_percentiles": {f"p{p}": int(np.percentile(lengths, p)) for p in PERCENTILES},
        "documents_shorter_than_window": int(np.sum(lengths < w)),
        "window_length": w, "segment_length": stream.segment_length,
        "batch_size": stream.batch_size,
        "packing_efficiency_train": tokens / slots_train,
        "eval_batches": eval_batches,
        "packing_efficiency_eval": tokens / (eval_batches * stream.batch_size
                                             * stream.segment_length),
    }


def format_stats(stats: dict) -> str:
    percentiles = " ".join(f"{k}={v}" for k, v in stats["length_percentiles"].items())
    return "\n".join([
        f"task {stats['task']}: {stats['documents']} documents, {stats['tokens']} tokens, "
        f"{stats['bytes']} bytes, {stats['bytes_per_token']:.3f} bytes/token",
        f"document length in tokens: {percentiles}; "
        f"{stats['documents_shorter_than_window']} shorter than one window",
        f"packing at B={stats['batch_size']} T={stats['segment_length']} "
        f"W={stats['window_length']}: train {100 * stats['packing_efficiency_train']:.2f}%, "
        f"eval {100 * stats['packing_efficiency_eval']:.2f}% ({stats['eval_batches']} batches)",
    ])


def _define_flags() -> None:
    # Defined only when run as a program, so importing this module never clashes with other flags.
    flags.DEFINE_string("task", None, "Task name, e.g. books_bytes (or use --text_dir).")
    flags.DEFINE_string("split", "train", "train, validation or test.")
    flags.DEFINE_string("text_dir", None, "A folder of text files, one document per file.")
    flags.DEFINE_string("vocabulary", "bytes", "Vocabulary for --text_dir: bytes or spm16k.")
    flags.DEFINE_string("tfds_data_dir", None, "Folder with a prepared TFDS pg19.")
    flags.DEFINE_string("data_dir", None, "Data root (default $MELODI_DATA_DIR, else <repo>/data).")
    flags.DEFINE_integer("window_length", 512, "W: tokens per window.")
    flags.DEFINE_integer("segment_length", 4096, "T: tokens per segment (a multiple of W).")
    flags.DEFINE_integer("batch_size", 8, "B: lanes.")
    flags.DEFINE_bool("json", False, "Print one JSON object instead of text.")


@exit_on_user_error
def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise UserError(f"unexpected arguments {argv[1:]}: use --task=NAME --split=SPLIT")
    f = flags.FLAGS
    stream = make_lanes(f.task, f.split, text_dir=f.text_dir, vocabulary=f.vocabulary,
                        batch_size=f.batch_size, segment_length=f.segment_length,
                        window_length=f.window_length, train=False,
                        tfds_data_dir=f.tfds_data_dir, data_dir=f.data_dir)
    stats = split_stats(stream)
    stats["split"] = f.split
    print(json.dumps(stats) if f.json else format_stats(stats))


if __name__ == "__main__":
    _define_flags()
    app.run(main)
