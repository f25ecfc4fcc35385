"""Where the data layer keeps corpora, downloads and token caches."""

from __future__ import annotations

import csv
import os
import pathlib

from melodi_jax.errors import UserError

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
SPLITS = ("train", "validation", "test")
MANIFEST = "manifest.tsv"


def data_root(data_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """`data_dir` if given, else $MELODI_DATA_DIR, else `<repo>/data`."""
    chosen = data_dir or os.environ.get("MELODI_DATA_DIR") or REPO_ROOT / "data"
    return pathlib.Path(chosen).expanduser().resolve()


def read_manifest(corpus_dir: pathlib.Path) -> list[dict]:
    """Rows {file, bytes, md5, split} of a built corpus, in corpus order (sorted by file)."""
    path = corpus_dir / MANIFEST
    if not path.exists():
        raise UserError(f"{path} not found: build the corpus with `bash launch/prepare_data.sh` "
                        f"(or set MELODI_DATA_DIR to where it was built)")
    with path.open(newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))
