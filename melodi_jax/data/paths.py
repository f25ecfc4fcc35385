"""Where the data layer keeps corpora, downloads and token caches."""

from __future__ import annotations

import os
import pathlib

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
SPLITS = ("train", "validation", "test")


def data_root(data_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """`data_dir` if given, else $MELODI_DATA_DIR, else `<repo>/data`."""
    chosen = data_dir or os.environ.get("MELODI_DATA_DIR") or REPO_ROOT / "data"
    return pathlib.Path(chosen).expanduser().resolve()
