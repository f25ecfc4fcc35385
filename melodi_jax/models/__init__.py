"""Build a window-recurrent decoder from gin files: `models.build(gin_files, bindings)`."""

import logging
import os
from typing import Sequence

import gin

from melodi_jax.errors import UserError
from melodi_jax.models.config import ModelConfig
from melodi_jax.models.decoder import DecoderLM
from melodi_jax.models import stacks  # noqa: F401  (registers the stack plans with gin)
from melodi_jax.models import baseline_stacks  # noqa: F401  (the baselines' stack plans)

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), 'configs')


def _not_gin_resource_miss(record: logging.LogRecord) -> bool:
  # gin first tries every `include` as a Python package resource and logs an ERROR when it is
  # not one, before finding the file on the search path; that line would only alarm users.
  return not record.pathname.endswith(os.path.join('gin', 'resource_reader.py'))


logging.getLogger().addFilter(_not_gin_resource_miss)


def build_from_gin(segment_length: int | None = None) -> DecoderLM:
  """The DecoderLM of the gin config parsed so far; checks it can work before any tracing."""
  config = ModelConfig()
  config.validate()
  if segment_length is not None and segment_length % config.window_length:
    raise UserError(f'segment length {segment_length} is not a multiple of '
                    f'ModelConfig.window_length = {config.window_length}')
  return DecoderLM(config)


def parse_gin(gin_files: Sequence[str] = (), bindings: Sequence[str] = (),
              search_paths: Sequence[str] = ()) -> None:
  """Clears gin and parses files (found as given, or under `search_paths` and configs/).

  Gin is left unlocked: the data and training layers register their configurables when they are
  imported, which may come after a model is built.
  """
  gin.clear_config()
  for path in list(search_paths) + [CONFIG_DIR]:
    gin.add_config_file_search_path(path)
  resolved = []
  for name in gin_files:
    candidates = [name] + [os.path.join(p, name) for p in list(search_paths) + [CONFIG_DIR]]
    found = next((c for c in candidates if os.path.isfile(c)), None)
    if found is None:
      raise UserError(f'gin file {name!r} not found (looked in ., '
                      f'{", ".join(list(search_paths) + [CONFIG_DIR])}): check --gin_file')
    resolved.append(found)
  try:
    gin.parse_config_files_and_bindings(resolved, list(bindings), finalize_config=False)
  except (ValueError, KeyError, SyntaxError, IOError) as e:
    first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise UserError(f'gin config error: {first_line} (check the gin files and bindings)') from e


def build(gin_files: Sequence[str] = (), bindings: Sequence[str] = (), *,
          segment_length: int | None = None, search_paths: Sequence[str] = ()) -> DecoderLM:
  """Parses gin files + bindings and returns the configured DecoderLM."""
  parse_gin(gin_files, bindings, search_paths)
  return build_from_gin(segment_length)


__all__ = ['DecoderLM', 'ModelConfig', 'build', 'build_from_gin', 'parse_gin']
