"""Where a split's documents come from: built corpora, a folder of text files, TFDS PG-19, or a
tiny synthetic generator. Pure Python (TensorFlow only for PG-19); every document is a whole file.

A source is a `DocumentSource`: a stable fingerprint (what the token cache is keyed by) and a
function that yields `(name, bytes)` per document in corpus order.
"""

from __future__ import annotations

import dataclasses
import hashlib
import pathlib
from typing import Callable, Iterator

import numpy as np

from melodi_jax.data.paths import SPLITS, data_root, read_manifest
from melodi_jax.errors import UserError

CORPORA = ("books", "math", "code")


@dataclasses.dataclass(frozen=True)
class DocumentSource:
    """The documents of one split: `read()` yields (name, data bytes) in corpus order."""

    description: str  # e.g. "books/train", for messages
    fingerprint: str  # changes whenever the documents may have changed
    read: Callable[[], Iterator[tuple[str, bytes]]]
    cacheable: bool = True  # False: cheaper to regenerate than to cache (synthetic)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise UserError(f"split {split!r} is not one of {SPLITS}: pass --split=train|validation|test")


def _files_source(description: str, files: list[tuple[str, pathlib.Path]]) -> DocumentSource:
    """A source over named files; the fingerprint covers names, sizes and modification times."""
    digest = hashlib.sha256()
    for name, path in files:
        stat = path.stat()
        digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())

    def read() -> Iterator[tuple[str, bytes]]:
        for name, path in files:
            yield name, path.read_bytes()

    return DocumentSource(description, digest.hexdigest(), read)


def corpus_source(corpus: str, split: str, data_dir: str | None = None) -> DocumentSource:
    """A built offline corpus (books, math, code): the files its manifest lists for `split`."""
    _check_split(split)
    corpus_dir = data_root(data_dir) / corpus
    rows = [r for r in read_manifest(corpus_dir) if r["split"] == split]
    if not rows:
        raise UserError(f"{corpus_dir}/manifest.tsv lists no {split} documents: rebuild with "
                        f"`bash launch/prepare_data.sh --corpora={corpus} --force`")
    return _files_source(f"{corpus}/{split}", [(r["file"], corpus_dir / r["file"]) for r in rows])


def text_dir_source(text_dir: str, split: str) -> DocumentSource:
    """Every non-hidden file under `text_dir` (recursively, sorted) is one document.

    If `text_dir` has a subfolder named after the split (train/, validation/, test/), only that
    subfolder is used; otherwise the whole folder serves every split.
    """
    _check_split(split)
    root = pathlib.Path(text_dir).expanduser()
    if not root.is_dir():
        raise UserError(f"--text_dir={text_dir} is not a folder: pass a folder of text files")
    if (root / split).is_dir():
        root = root / split
    files = [p for p in sorted(root.rglob("*"))
             if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)]
    if not files:
        raise UserError(f"--text_dir={root} holds no files: put one text file per document there")
    return _files_source(f"text_dir {root}", [(str(p.relative_to(root)), p) for p in files])


def pg19_source(split: str, tfds_data_dir: str | None) -> DocumentSource:
    """PG-19 from a prepared TFDS copy (`tfds build pg19 --data_dir=DIR` done beforehand)."""
    _check_split(split)
    if not tfds_data_dir:
        raise UserError("pg19 tasks need --tfds_data_dir=DIR holding a prepared TFDS `pg19`")
    root = pathlib.Path(tfds_data_dir).expanduser()
    versions = sorted(root.glob("pg19/*/dataset_info.json"))
    if not versions:
        raise UserError(f"no prepared pg19 under --tfds_data_dir={tfds_data_dir}: run "
                        f"`tfds build pg19 --data_dir={tfds_data_dir}` where network exists")
    fingerprint = hashlib.sha256(f"{versions[-1]}\0{split}".encode()).hexdigest()

    def read() -> Iterator[tuple[str, bytes]]:
        import tensorflow as tf
        import tensorflow_datasets as tfds

        tf.config.set_visible_devices([], "GPU")  # input pipelines never take accelerators
        dataset = tfds.load("pg19", split=split, data_dir=str(root), download=False,
                            shuffle_files=False)
        for example in tfds.as_numpy(dataset):
            yield str(example["book_id"]), bytes(example["book_text"])

    return DocumentSource(f"pg19/{split}", fingerprint, read)


def synthetic_source(split: str, num_documents: int = 24) -> DocumentSource:
    """A tiny deterministic corpus for tests: documents that must recall a key seen far back."""
    _check_split(split)
    seed = SPLITS.index(split)

    def read() -> Iterator[tuple[str, bytes]]:
        rng = np.random.default_rng(seed)
        words = ["alpha", "beta", "gamma", "delta", "lanes", "memory", "window", "summary"]
        for i in range(num_documents):
            key = "".join(rng.choice(list("abcdefghij"), 6))
            body = " ".join(rng.choice(words, int(rng.integers(20, 400))))
            yield f"synthetic/{split}/{i:03d}.txt", f"key {key}\n{body}\nkey was {key}\n".encode()

    return DocumentSource(f"synthetic/{split}", f"synthetic-v1-{split}-{num_documents}", read,
                          cacheable=False)


def source_for(corpus: str, split: str, *, text_dir: str | None = None,
               tfds_data_dir: str | None = None, data_dir: str | None = None) -> DocumentSource:
    """The documents of `corpus` (books, math, code, pg19, synthetic, text_dir) for `split`; the
    task corpora built on these (recall.py, mqar.py) are composed in pipeline.py."""
    if corpus in CORPORA:
        return corpus_source(corpus, split, data_dir)
    if corpus == "pg19":
        return pg19_source(split, tfds_data_dir)
    if corpus == "synthetic":
        return synthetic_source(split)
    if corpus == "text_dir":
        if not text_dir:
            raise UserError("text_dir tasks need --text_dir=PATH (a folder of text files)")
        return text_dir_source(text_dir, split)
    raise UserError(f"unknown corpus {corpus!r}: choose from "
                    f"{CORPORA + ('pg19', 'synthetic', 'text_dir')}")
