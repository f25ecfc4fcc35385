"""Tokenises a split once and caches it on disk, so building a lane stream takes milliseconds.

Cache layout: `<data_root>/cache/tokens/<key>/{tokens.npy, offsets.npy, meta.json}`, where the key
hashes the source fingerprint and the vocabulary; the arrays are memory-mapped when loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pathlib
import shutil

import numpy as np

from melodi_jax.data.lanes import Documents
from melodi_jax.data.paths import data_root
from melodi_jax.data.sources import DocumentSource
from melodi_jax.data.vocab import Vocabulary
from melodi_jax.errors import UserError

CACHE_VERSION = "tokens-v1"


def _vocab_fingerprint(vocab: Vocabulary) -> str:
    model = getattr(vocab, "model_path", None)
    extra = hashlib.md5(pathlib.Path(model).read_bytes()).hexdigest() if model else ""
    return f"{vocab.name}:{vocab.vocab_size}:{extra}"


def _token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint8 if vocab_size <= 256 else np.uint16 if vocab_size <= 65536
                    else np.int32)


def tokenize(source: DocumentSource, vocab: Vocabulary) -> tuple[Documents, dict]:
    """Tokenises every document of `source`; returns (Documents, counts for warnings).

    Empty documents are left out and counted; invalid UTF-8 is counted (bytes vocabulary: kept as
    is; SentencePiece: replaced by U+FFFD).
    """
    dtype = _token_dtype(vocab.vocab_size)
    pieces, names, lengths = [], [], []
    counts = {"documents": 0, "empty_skipped": 0, "invalid_utf8_documents": 0,
              "replacement_chars": 0, "first_empty": "", "first_invalid": ""}
    for name, data in source.read():
        counts["documents"] += 1
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            counts["invalid_utf8_documents"] += 1
            counts["first_invalid"] = counts["first_invalid"] or name
        ids, replaced = vocab.encode(data)
        counts["replacement_chars"] += replaced
        if len(ids) == 0:
            counts["empty_skipped"] += 1
            counts["first_empty"] = counts["first_empty"] or name
            continue
        pieces.append(ids.astype(dtype))
        names.append(name)
        lengths.append(len(ids))
    if not names:
        raise UserError(f"{source.description}: all {counts['documents']} documents are empty: "
                        f"put text in them or pick another folder/split")
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return Documents(np.concatenate(pieces), offsets, tuple(names)), counts


def report(source: DocumentSource, vocab: Vocabulary, counts: dict) -> None:
    """Logs one counted warning line per kind of bad input (never a silent skip)."""
    if counts["empty_skipped"]:
        logging.warning("%s: skipped %d empty file(s) of %d (first: %s)", source.description,
                        counts["empty_skipped"], counts["documents"], counts["first_empty"])
    if counts["invalid_utf8_documents"]:
        how = ("kept as raw bytes" if vocab.name == "bytes" else
               f"decoded with {counts['replacement_chars']} U+FFFD replacement(s)")
        logging.warning("%s: %d file(s) are not valid UTF-8 (first: %s); %s",
                        source.description, counts["invalid_utf8_documents"],
                        counts["first_invalid"], how)


def load_documents(source: DocumentSource, vocab: Vocabulary, *,
                   cache_dir: str | os.PathLike | None = None) -> Documents:
    """The tokenised documents of `source`, from the cache when it is there (built otherwise)."""
    if not source.cacheable:
        documents, counts = tokenize(source, vocab)
        report(source, vocab, counts)
        return documents
    key = hashlib.sha256(f"{CACHE_VERSION}\0{source.fingerprint}\0{_vocab_fingerprint(vocab)}"
                         .encode()).hexdigest()[:20]
    root = pathlib.Path(cache_dir) if cache_dir else data_root() / "cache" / "tokens"
    folder = root / key
    if (folder / "meta.json").exists():
        meta = json.loads((folder / "meta.json").read_text())
        report(source, vocab, meta["counts"])
        return Documents(np.load(folder / "tokens.npy", mmap_mode="r"),
                         np.load(folder / "offsets.npy"), tuple(meta["names"]))
    documents, counts = tokenize(source, vocab)
    report(source, vocab, counts)
    try:
        staging = root / f".{key}.{os.getpid()}"
        staging.mkdir(parents=True, exist_ok=True)
        np.save(staging / "tokens.npy", documents.tokens)
        np.save(staging / "offsets.npy", documents.offsets)
        (staging / "meta.json").write_text(json.dumps(
            {"source": source.description, "vocabulary": vocab.name, "counts": counts,
             "names": list(documents.names)}))
        staging.rename(folder)  # atomic: a concurrent builder either wins or finds it done
    except OSError as e:
        shutil.rmtree(staging, ignore_errors=True)
        logging.warning("token cache not written to %s (%s); tokenising again next time", root, e)
    return documents
