"""make_lanes over a folder of text files: round trip, caching, bad input and the CLI contract."""

import logging
import subprocess
import sys

import numpy as np
import pytest

from melodi_jax.data import make_lanes, parse_task
from melodi_jax.errors import UserError
from melodi_jax.data.paths import REPO_ROOT

TEXTS = {
    "a.txt": "The first document, long enough to span several windows. " * 4,
    "b.txt": "short",
    "sub/c.txt": "Third document.\nWith two lines and a tab\there.\n" * 3,
    "d.txt": "Ünïcödé text — with ‘quotes’ and emoji 🙂 " * 2,
}


@pytest.fixture()
def text_dir(tmp_path, monkeypatch):
    """A tiny corpus of text files; the data root (token cache) also lives in tmp_path."""
    monkeypatch.setenv("MELODI_DATA_DIR", str(tmp_path / "data"))
    folder = tmp_path / "texts"
    for name, text in TEXTS.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def _lanes(text_dir, vocabulary="bytes", **kwargs):
    args = dict(batch_size=2, segment_length=16, window_length=8, train=False)
    args.update(kwargs)
    return make_lanes(None, "test", text_dir=str(text_dir), vocabulary=vocabulary, **args)


def _documents_from_batches(stream):
    """Rebuilds each document's bytes from the stream (first input + weighted targets)."""
    batches = list(stream)
    inputs = np.concatenate([b["inputs"] for b in batches], axis=1)
    targets = np.concatenate([b["targets"] for b in batches], axis=1)
    weights = np.concatenate([b["loss_weights"] for b in batches], axis=1)
    starts = np.concatenate([b["doc_start"] for b in batches], axis=1)
    docs = []
    for lane, window in zip(*np.nonzero(starts)):
        t = window * stream.window_length
        ids = [inputs[lane, t]]
        while t < weights.shape[1] and weights[lane, t]:
            ids.append(targets[lane, t])
            t += 1
        docs.append(ids)
    return docs, batches


@pytest.mark.parametrize("vocabulary", ["bytes", "spm16k"])
def test_text_dir_round_trip_and_bytes(text_dir, vocabulary):
    stream = _lanes(text_dir, vocabulary)
    assert stream.task == f"text_dir_{vocabulary}"
    docs, batches = _documents_from_batches(stream)
    decoded = sorted(stream.vocabulary.decode(ids) for ids in docs)
    assert decoded == sorted(TEXTS.values())
    # bytes counts every target's UTF-8 bytes: all bytes but each document's first token's.
    first = sum(stream.vocabulary.count_bytes(ids[:1]) for ids in docs)
    total = sum(len(t.encode("utf-8")) for t in TEXTS.values())
    assert sum(b["bytes"].sum() for b in batches) == total - first


def test_token_cache_is_reused_and_refreshed(text_dir, tmp_path):
    _lanes(text_dir)
    cache = tmp_path / "data" / "cache" / "tokens"
    assert len(list(cache.iterdir())) == 1
    _lanes(text_dir)
    assert len(list(cache.iterdir())) == 1
    (text_dir / "b.txt").write_text("changed and longer")
    docs, _ = _documents_from_batches(_lanes(text_dir))
    assert len(list(cache.iterdir())) == 2
    assert any(bytes(np.asarray(d, np.uint8)) == b"changed and longer" for d in docs)


def test_split_subfolders_are_used(text_dir):
    (text_dir / "test").mkdir()
    (text_dir / "test" / "only.txt").write_text("only this one")
    docs, _ = _documents_from_batches(_lanes(text_dir))
    assert [bytes(np.asarray(d, np.uint8)) for d in docs] == [b"only this one"]


def test_bad_folders_raise_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MELODI_DATA_DIR", str(tmp_path / "data"))
    with pytest.raises(UserError, match="not a folder"):
        _lanes(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no files"):
        _lanes(tmp_path / "empty")
    (tmp_path / "blank").mkdir()
    (tmp_path / "blank" / "x.txt").write_bytes(b"")
    with pytest.raises(UserError, match="empty"):
        _lanes(tmp_path / "blank")
    with pytest.raises(UserError, match="must divide"):
        _lanes(tmp_path / "blank", segment_length=12, window_length=8)
    with pytest.raises(UserError, match="unknown task"):
        parse_task("books_gpt2")


def test_bad_files_are_counted_not_silently_skipped(text_dir, caplog):
    (text_dir / "empty.txt").write_bytes(b"")
    (text_dir / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    with caplog.at_level(logging.WARNING):
        stream = _lanes(text_dir, window_length=64, segment_length=128)
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "skipped 1 empty file(s)" in messages and "empty.txt" in messages
    assert "not valid UTF-8" in messages and "kept as raw bytes" in messages
    assert "shorter than one window" in messages
    docs, _ = _documents_from_batches(stream)
    assert any(bytes(np.asarray(d, np.uint8)) == b"caf\xe9 cr\xe8me" for d in docs)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        spm = _lanes(text_dir, "spm16k")
    assert "2 U+FFFD replacement(s)" in " ".join(r.getMessage() for r in caplog.records)
    docs, _ = _documents_from_batches(spm)
    assert "caf\ufffd cr\ufffdme" in [spm.vocabulary.decode(d) for d in docs]


def test_shards_partition_text_dir(text_dir):
    seen = []
    for shard in range(2):
        docs, _ = _documents_from_batches(_lanes(text_dir, shard_index=shard, num_shards=2))
        seen.append({bytes(np.asarray(d, np.uint8)) for d in docs})
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == {t.encode() for t in TEXTS.values()}


def test_entry_point_prints_one_line_and_exits_2(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "melodi_jax.data.stats", f"--text_dir={tmp_path / 'nope'}"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: --text_dir={tmp_path / 'nope'} is not a folder: pass a folder of text files"]


def test_synthetic_task_needs_no_files(tmp_path, monkeypatch):
    monkeypatch.setenv("MELODI_DATA_DIR", str(tmp_path / "data"))
    stream = make_lanes("synthetic_bytes", "train", batch_size=2, segment_length=64,
                        window_length=16, train=True)
    batch = next(stream)
    assert batch["inputs"].shape == (2, 64) and batch["doc_start"].shape == (2, 4)
    assert stream.vocab_size == 256 and batch["doc_start"][:, 0].all()
    assert not (tmp_path / "data").exists()  # synthetic documents are never cached
