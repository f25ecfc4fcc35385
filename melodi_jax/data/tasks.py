"""seqio registrations: `<corpus>_<vocabulary>` for books, math, code, pg19 and synthetic, plus
`register_text_dir(path)` for any folder of text files. One example = one whole document.

Registration is lazy: importing this module reads no corpus; files are read when a dataset is
requested. Examples carry `targets` int32[L] (no EOS: lanes mark document starts instead). These
tasks are for seqio users and tools; training and evaluation batches come from `make_lanes`,
never from seqio's packing or shuffling, which would cut documents apart.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pathlib

import seqio
import tensorflow as tf

from melodi_jax.data.pipeline import CORPORA, document_source
from melodi_jax.data.vocab import SPM16K_MODEL, VOCABULARIES

try:
    tf.config.set_visible_devices([], "GPU")  # TensorFlow only feeds input; JAX owns accelerators
except RuntimeError:  # TF already initialised its devices elsewhere; nothing more to do
    pass


class RawBytesVocabulary(seqio.Vocabulary):
    """Token id = raw byte value 0..255 (unlike seqio.ByteVocabulary, which shifts ids by 3).

    Id 0 is both PAD and the NUL byte; padding is told apart by loss weights, never by id.
    """

    _BYTES = tf.constant([bytes([i]) for i in range(256)])

    def __init__(self):
        super().__init__(extra_ids=0)

    @property
    def eos_id(self) -> int | None:
        return None

    @property
    def unk_id(self) -> int | None:
        return None

    @property
    def _base_vocab_size(self) -> int:
        return 256

    def _encode(self, s: str) -> list[int]:
        return list(s.encode("utf-8"))

    def _decode(self, ids) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")

    def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
        """string[] -> int32[L]."""
        return tf.cast(tf.io.decode_raw(s, tf.uint8), tf.int32)

    def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
        """int32[..., L] -> string[...]."""
        return tf.strings.reduce_join(tf.gather(self._BYTES, ids), axis=-1)

    def __eq__(self, other) -> bool:
        return isinstance(other, RawBytesVocabulary)


def seqio_vocabulary(name: str) -> seqio.Vocabulary:
    """The seqio form of a vocabulary name ('bytes' or 'spm16k')."""
    if name == "bytes":
        return RawBytesVocabulary()
    return seqio.SentencePieceVocabulary(str(SPM16K_MODEL))


def _dataset_fn(corpus: str, text_dir: str | None = None):
    """A seqio dataset_fn yielding {'text': string[]} per document of `corpus`, in corpus order."""

    def dataset_fn(split: str, shuffle_files: bool = False) -> tf.data.Dataset:
        del shuffle_files  # document order is fixed; lanes shuffle documents themselves
        source = document_source(corpus, split, text_dir=text_dir,
                                 tfds_data_dir=os.environ.get("TFDS_DATA_DIR"))
        return tf.data.Dataset.from_generator(
            lambda: ({"text": data} for _, data in source.read()),
            output_signature={"text": tf.TensorSpec([], tf.string)})

    return dataset_fn


def _register(name: str, corpus: str, vocabulary: str, text_dir: str | None = None) -> str:
    if name in seqio.TaskRegistry.names():
        return name
    seqio.TaskRegistry.add(
        name,
        source=seqio.FunctionDataSource(_dataset_fn(corpus, text_dir),
                                        splits=("train", "validation", "test")),
        preprocessors=[functools.partial(seqio.preprocessors.rekey, key_map={"targets": "text"}),
                       seqio.preprocessors.tokenize],
        output_features={"targets": seqio.Feature(seqio_vocabulary(vocabulary), add_eos=False,
                                                  dtype=tf.int32)})
    return name


def register_text_dir(text_dir: str, vocabulary: str = "bytes") -> str:
    """Registers (once) and returns the task over a folder of text files, one per document.

    The name is `text_dir_<vocabulary>_<hash of the absolute path>`.
    """
    path = str(pathlib.Path(text_dir).expanduser().resolve())
    digest = hashlib.sha256(path.encode()).hexdigest()[:10]
    return _register(f"text_dir_{vocabulary}_{digest}", "text_dir", vocabulary, text_dir=path)


def register_all() -> list[str]:
    """Registers the fixed-name tasks; pg19 reads its TFDS copy from $TFDS_DATA_DIR. recallkeys
    differs from recall only in its loss weights, which seqio's text features do not carry;
    mqar is token ids with loss weights, not text (melodi_jax.data.make_lanes reads it)."""
    return [_register(f"{corpus}_{vocabulary}", corpus, vocabulary)
            for corpus in CORPORA if corpus not in ("text_dir", "recallkeys", "mqar")
            for vocabulary in VOCABULARIES]


TASK_NAMES = register_all()
