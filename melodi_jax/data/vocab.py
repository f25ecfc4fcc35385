"""Vocabularies: raw bytes (256) and a SentencePiece BPE 16k trained on the books corpus.

Both map a document's bytes to token ids and back, and give a table of the UTF-8 bytes each token
id covers, so bits per byte compare across vocabularies. Train the SentencePiece model with
  python -m melodi_jax.data.vocab [--data_dir=DIR] [--output=melodi_jax/data/books_spm16k.model]
"""

from __future__ import annotations

import functools
import os
import pathlib
from typing import Iterator

import numpy as np
from absl import app, flags

from melodi_jax.errors import UserError, exit_on_user_error

SPM16K_MODEL = pathlib.Path(__file__).resolve().parent / "books_spm16k.model"
VOCABULARIES = ("bytes", "spm16k")


class ByteVocabulary:
    """Token id = byte value (0..255). Takes any bytes as they are, invalid UTF-8 included."""

    name = "bytes"
    vocab_size = 256

    def encode(self, data: bytes | str) -> tuple[np.ndarray, int]:
        """(int32[L] ids, 0): the bytes themselves; nothing is ever replaced."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        return np.frombuffer(data, np.uint8).astype(np.int32), 0

    def decode(self, ids) -> str:
        """Text of int[L] ids; invalid UTF-8 becomes U+FFFD."""
        return bytes(np.asarray(ids, np.uint8).tolist()).decode("utf-8", errors="replace")

    @functools.cached_property
    def token_bytes(self) -> np.ndarray:
        """float32[256]: every token covers one byte."""
        return np.ones([256], np.float32)

    def count_bytes(self, ids) -> int:
        """UTF-8 bytes covered by the tokens int[...] `ids`."""
        return int(self.token_bytes[np.asarray(ids)].sum())


class SentencePieceVocabulary:
    """A SentencePiece model trained with identity normalisation, no dummy prefix, byte fallback.

    So decode(encode(text)) == text for valid UTF-8 (except the rare literal U+2581 '▁', which
    decodes as a space), and the byte table sums to the document's UTF-8 length. Invalid UTF-8 is
    decoded with replacement (U+FFFD, 3 bytes) before encoding; `encode` returns how many
    replacement characters that made so callers can count and report it.
    """

    def __init__(self, model_path: str | os.PathLike = SPM16K_MODEL, name: str = "spm16k"):
        import sentencepiece  # only where a SentencePiece vocabulary is used

        self.model_path = pathlib.Path(model_path)
        if not self.model_path.exists():
            raise UserError(f"SentencePiece model {self.model_path} not found: train it with "
                            f"`python -m melodi_jax.data.vocab` (needs the books corpus)")
        self.name = name
        self.processor = sentencepiece.SentencePieceProcessor(model_file=str(self.model_path))
        self.vocab_size = self.processor.get_piece_size()

    def encode(self, data: bytes | str) -> tuple[np.ndarray, int]:
        """(int32[L] ids, number of U+FFFD substituted for invalid UTF-8)."""
        if isinstance(data, bytes):
            text = data.decode("utf-8", errors="replace")
            replaced = text.count("\ufffd") - data.count("\ufffd".encode("utf-8"))
        else:
            text, replaced = data, 0
        return np.asarray(self.processor.encode(text), np.int32), replaced

    def decode(self, ids) -> str:
        return self.processor.decode(np.asarray(ids).tolist())

    @functools.cached_property
    def token_bytes(self) -> np.ndarray:
        """float32[V] UTF-8 bytes each piece decodes to (byte pieces 1, control pieces 0)."""
        table = np.zeros([self.vocab_size], np.float32)
        for i in range(self.vocab_size):
            if self.processor.is_control(i) or self.processor.is_unknown(i):
                continue
            if self.processor.is_byte(i):
                table[i] = 1
            else:
                table[i] = len(self.processor.id_to_piece(i).replace("\u2581", " ").encode("utf-8"))
        return table

    def count_bytes(self, ids) -> int:
        """UTF-8 bytes covered by the tokens int[...] `ids`."""
        return int(self.token_bytes[np.asarray(ids)].sum())


Vocabulary = ByteVocabulary | SentencePieceVocabulary


@functools.cache
def get_vocabulary(name: str) -> Vocabulary:
    """'bytes' or 'spm16k' (the committed books model)."""
    if name == "bytes":
        return ByteVocabulary()
    if name == "spm16k":
        return SentencePieceVocabulary(SPM16K_MODEL, "spm16k")
    raise UserError(f"unknown vocabulary {name!r}: choose from {VOCABULARIES}")


# --------------------------------------------------------------------------------- training
def training_lines(files: list[pathlib.Path]) -> Iterator[str]:
    """The non-empty lines of `files` in order (SentencePiece trains on lines, not documents)."""
    for path in files:
        for line in path.read_bytes().decode("utf-8", errors="replace").split("\n"):
            if line:
                yield line


def train_sentencepiece(files: list[pathlib.Path], output: pathlib.Path,
                        vocab_size: int = 16384) -> None:
    """Trains a BPE model on `files`; deterministic (all lines in order, no sampling)."""
    import sentencepiece

    if not files:
        raise UserError("no training files for SentencePiece: build the books corpus first")
    output.parent.mkdir(parents=True, exist_ok=True)
    with open(output, "wb") as writer:
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=training_lines(files), model_writer=writer, model_type="bpe",
            vocab_size=vocab_size, byte_fallback=True, character_coverage=0.9995,
            # Identity normalisation and no dummy prefix make decoding exact, so the per-piece
            # byte table measures real UTF-8 bytes.
            normalization_rule_name="identity", add_dummy_prefix=False,
            remove_extra_whitespaces=False, allow_whitespace_only_pieces=True, split_digits=True,
            user_defined_symbols=["\n"],  # lines are the training unit; newlines still need a piece
            pad_id=0, eos_id=1, unk_id=2, bos_id=-1, max_sentence_length=1 << 16,
            input_sentence_size=0, shuffle_input_sentence=False, num_threads=2, minloglevel=2)


def _define_flags() -> None:
    # Defined only when run as a program, so importing this module never clashes with other flags.
    flags.DEFINE_string("data_dir", None, "Data root (default $MELODI_DATA_DIR, else <repo>/data).")
    flags.DEFINE_string("output", str(SPM16K_MODEL), "Where to write the .model file.")
    flags.DEFINE_integer("vocab_size", 16384, "SentencePiece vocabulary size.")


@exit_on_user_error
def main(argv: list[str]) -> None:
    from melodi_jax.data.paths import data_root, read_manifest

    del argv
    books = data_root(flags.FLAGS.data_dir) / "books"
    rows = read_manifest(books)
    files = [books / r["file"] for r in rows if r["split"] == "train"]
    train_sentencepiece(files, pathlib.Path(flags.FLAGS.output), flags.FLAGS.vocab_size)
    print(f"vocab: wrote {flags.FLAGS.output} ({len(files)} books train documents)")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
