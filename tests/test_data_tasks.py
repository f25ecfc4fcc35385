"""seqio tasks: lazy registration, whole documents as examples, same tokens as the lanes."""

import numpy as np
import pytest

seqio = pytest.importorskip("seqio")

from melodi_jax.data import get_vocabulary, sources  # noqa: E402
from melodi_jax.errors import UserError  # noqa: E402
from melodi_jax.data import tasks  # noqa: E402  (imports TensorFlow)


def _examples(task_name, split="test"):
    task = seqio.get_mixture_or_task(task_name)
    dataset = task.get_dataset(sequence_length=None, split=split, shuffle=False)
    return [ex["targets"] for ex in dataset.as_numpy_iterator()]


def test_fixed_names_register_without_reading_data(tmp_path, monkeypatch):
    monkeypatch.setenv("MELODI_DATA_DIR", str(tmp_path / "nothing-built-here"))
    for corpus in ("books", "math", "code", "pg19", "synthetic"):
        for vocabulary in ("bytes", "spm16k"):
            assert f"{corpus}_{vocabulary}" in seqio.TaskRegistry.names()
    with pytest.raises(UserError, match="prepare_data.sh"):
        _examples("books_bytes")


@pytest.mark.parametrize("vocabulary", ["bytes", "spm16k"])
def test_synthetic_examples_are_whole_documents(vocabulary):
    examples = _examples(f"synthetic_{vocabulary}")
    documents = list(sources.synthetic_source("test").read())
    assert len(examples) == len(documents)
    vocab = get_vocabulary(vocabulary)
    for ids, (_, data) in zip(examples, documents):
        np.testing.assert_array_equal(ids, vocab.encode(data)[0])


def test_text_dir_task(tmp_path):
    (tmp_path / "one.txt").write_bytes(b"first \xff document")
    (tmp_path / "two.txt").write_text("second")
    name = tasks.register_text_dir(str(tmp_path))
    assert name == tasks.register_text_dir(str(tmp_path))  # registering twice is harmless
    examples = _examples(name)
    assert [bytes(e.astype(np.uint8)) for e in examples] == [b"first \xff document", b"second"]
    vocab = seqio.get_mixture_or_task(name).output_features["targets"].vocabulary
    assert vocab.vocab_size == 256 and vocab.decode([104, 105]) == "hi"


def test_pg19_reads_a_prepared_tfds_copy(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with pytest.raises(UserError, match="tfds build pg19"):
        sources.pg19_source("test", str(tmp_path)).read()
    (tmp_path / "pg19" / "0.1.1").mkdir(parents=True)
    (tmp_path / "pg19" / "0.1.1" / "dataset_info.json").write_text("{}")
    with tfds.testing.mock_data(num_examples=3):  # stands in for a real prepared copy
        documents = list(sources.pg19_source("test", str(tmp_path)).read())
    assert len(documents) == 3 and all(isinstance(d, bytes) and d for _, d in documents)
