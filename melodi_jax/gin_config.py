"""Finding and parsing gin files: the one parser under `models.build` and every entry point's
`cli.parse_gin` (train/cli.py), which registers the run's configurables first."""
from __future__ import annotations

import contextlib
import logging
import os
import pathlib
from collections.abc import Iterator, Sequence

import gin

from melodi_jax.errors import UserError

CONFIG_DIR = str(pathlib.Path(__file__).resolve().parents[1] / 'configs')


def search_paths(paths: Sequence[str]) -> list[str]:
  """`paths` made absolute, then the package's configs/ (always searched last)."""
  out = [os.path.abspath(p) for p in paths]
  if CONFIG_DIR not in out and os.path.isdir(CONFIG_DIR):
    out.append(CONFIG_DIR)
  return out


def resolve(name: str, paths: Sequence[str]) -> str:
  """The absolute path of gin file `name`: as given, then under `paths`; '.gin' optional."""
  candidates = [name] if os.path.isabs(name) else [name] + [os.path.join(p, name) for p in paths]
  if not name.endswith('.gin'):
    candidates += [c + '.gin' for c in candidates]
  for candidate in candidates:
    if os.path.isfile(candidate):
      return os.path.abspath(candidate)
  raise UserError(f'gin file {name!r} not found (looked in the current folder and '
                  f'{", ".join(paths)}); check --gin_file or pass --gin_search_paths')


def message(error: BaseException) -> str:
  """gin's error in one line: its first line and where ('In file ..., line ...')."""
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  where = next((l for l in lines[1:] if l.startswith('In ')), '')
  head = lines[0] if lines else type(error).__name__
  return f'{head} {where}'.strip()


def _is_resource_miss(record: logging.LogRecord) -> bool:
  # gin first tries every `include` as a Python package resource and logs an ERROR when it is
  # not one, before finding the file on the search path; that line would only alarm users.
  return record.pathname.endswith(os.path.join('gin', 'resource_reader.py'))


@contextlib.contextmanager
def _without_resource_misses() -> Iterator[None]:
  root = logging.getLogger()  # gin logs through the root logger
  keep = lambda record: not _is_resource_miss(record)
  root.addFilter(keep)
  try:
    yield
  finally:
    root.removeFilter(keep)


def parse(files: Sequence[str], bindings: Sequence[str], paths: Sequence[str] = ()) -> list[str]:
  """Clears gin, then parses `files` (see `resolve`) and `bindings` (applied after the files);
  returns the resolved file paths.

  Gin is left unlocked: the data and training layers register their configurables when they are
  imported, which may come after a model is built.
  """
  gin.clear_config()  # drops the bindings of a config parsed before in this process
  paths = search_paths(paths)
  for path in paths:
    gin.add_config_file_search_path(path)
  resolved = [resolve(f, paths) for f in files]
  try:
    with _without_resource_misses():
      gin.parse_config_files_and_bindings(resolved, list(bindings), finalize_config=False)
  except IOError as e:
    raise UserError(f'gin include failed: {message(e)}; check the include path or '
                    '--gin_search_paths') from None
  except (ValueError, SyntaxError, KeyError, TypeError) as e:
    raise UserError(f'gin config error: {message(e)}; check the spelling of the '
                    'configurable/parameter in your gin files and --gin_bindings') from None
  return resolved
