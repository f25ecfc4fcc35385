"""absl plumbing shared by footprint.py and bench.py: gin flags and one-line user errors.

Every error a user can cause ends as one line on stderr naming the flag to change, exit status 2;
absl's own flag-parsing errors are caught the same way.
"""

import logging
import sys
from typing import Callable, Sequence

from absl import app, flags

from melodi_jax import models
from melodi_jax.errors import UserError  # re-exported for the entry points
from melodi_jax.train import cli as train_cli
from melodi_jax.train import quiet


def define_common_flags() -> None:
  """--gin_file, --gin_bindings (alias --gin_param), --gin_search_paths, --json; idempotent so
  several entry points can be imported in one process (tests)."""
  if 'gin_file' in flags.FLAGS:
    return
  flags.DEFINE_bool('json', False, 'print JSON instead of text')
  flags.DEFINE_multi_string('gin_file', [], 'gin files (repeatable), found as given or under '
                            'configs/ and --gin_search_paths')
  flags.DEFINE_multi_string('gin_bindings', [], 'extra gin bindings (repeatable)')
  flags.DEFINE_multi_string('gin_param', [], 'alias of --gin_bindings (meliad spelling)')
  flags.DEFINE_multi_string('gin_search_paths', [], 'extra folders to look for gin files in')


def gin_bindings() -> list[str]:
  return list(flags.FLAGS.gin_bindings) + list(flags.FLAGS.gin_param)


def parse_gin(gin_files: Sequence[str], bindings: Sequence[str] = (),
              search_paths: Sequence[str] | None = None) -> None:
  """models.parse_gin, every run configurable registered first (a run's config parses too), with
  its UserError's message naming the flags."""
  # gin logs every include it looks for in the wrong folder at ERROR level; the real errors come
  # back as UserError, so quieten it while parsing.
  logging.disable(logging.ERROR)
  try:
    if search_paths is None:
      search_paths = flags.FLAGS.gin_search_paths if flags.FLAGS.is_parsed() else ()
    train_cli.register_configurables()
    models.parse_gin(gin_files, bindings, search_paths)
  except UserError as e:
    raise UserError(f'--gin_file/--gin_bindings: {e}') from e
  finally:
    logging.disable(logging.NOTSET)


def build_model() -> models.DecoderLM:
  """models.build_from_gin, with a model config that cannot work reported against the flags."""
  try:
    return models.build_from_gin()
  except UserError as e:
    raise UserError(f'--gin_file/--gin_bindings: {e}') from e


def fail(message: str) -> None:
  """Prints one line to stderr and exits with status 2."""
  print(f'error: {message}', file=sys.stderr)
  sys.exit(2)


def _parse_flags(argv: list[str]) -> list[str]:
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    fail(f'{e} (see --help)')
    return []


def run(main: Callable[[list[str]], None]) -> None:
  """app.run with user errors (UserError, bad flags) as one line + exit 2, quiet by default
  (train/quiet.py)."""
  def guarded(argv):
    quiet.setup()
    try:
      main(argv)
    except UserError as e:
      fail(str(e))
  app.run(guarded, flags_parser=_parse_flags)
