"""Vocabularies: ids, exact round trips, byte accounting and deterministic SentencePiece training."""

import numpy as np
import pytest

from melodi_jax.data import get_vocabulary
from melodi_jax.errors import UserError
from melodi_jax.data.vocab import SentencePieceVocabulary, train_sentencepiece

TEXT = "In the beginning\n\tcode  = 42;  # ‘quoted’ Ünïcödé 🙂\n\n"


def test_bytes_vocabulary_ids_are_raw_bytes():
    vocab = get_vocabulary("bytes")
    data = TEXT.encode() + b"\xff\x00"
    ids, replaced = vocab.encode(data)
    assert vocab.vocab_size == 256 and replaced == 0 and ids.dtype == np.int32
    np.testing.assert_array_equal(ids, np.frombuffer(data, np.uint8))
    assert vocab.decode(ids[:-2]) == TEXT
    assert vocab.count_bytes(ids) == len(data)


def test_spm16k_round_trips_and_counts_bytes_exactly():
    vocab = get_vocabulary("spm16k")
    assert vocab.vocab_size == 16384
    ids, replaced = vocab.encode(TEXT.encode())
    assert replaced == 0 and len(ids) < len(TEXT.encode())
    assert vocab.decode(ids) == TEXT
    assert vocab.count_bytes(ids) == len(TEXT.encode())
    # A span's bytes are the bytes its pieces decode to.
    assert vocab.count_bytes(ids[:3]) == len(vocab.decode(ids[:3]).encode())


def test_spm16k_replaces_and_counts_invalid_utf8():
    vocab = get_vocabulary("spm16k")
    ids, replaced = vocab.encode(b"ok \xff\xfe ok")
    assert replaced == 2
    assert vocab.decode(ids) == "ok \ufffd\ufffd ok"


def test_unknown_vocabulary_and_missing_model(tmp_path):
    with pytest.raises(UserError, match="unknown vocabulary"):
        get_vocabulary("gpt2")
    with pytest.raises(UserError, match="not found"):
        SentencePieceVocabulary(tmp_path / "missing.model")


def test_training_is_deterministic(tmp_path):
    corpus = tmp_path / "a.txt"
    rng = np.random.default_rng(0)
    words = ["lanes", "memory", "window", "summary", "token", "segment", "document"]
    corpus.write_text("\n".join(" ".join(rng.choice(words, 12)) for _ in range(300)))
    models = []
    for name in ("one", "two"):
        train_sentencepiece([corpus], tmp_path / f"{name}.model", vocab_size=300)
        models.append((tmp_path / f"{name}.model").read_bytes())
    assert models[0] == models[1]
    vocab = SentencePieceVocabulary(tmp_path / "one.model", "tiny")
    assert vocab.decode(vocab.encode("memory lanes\n")[0]) == "memory lanes\n"
