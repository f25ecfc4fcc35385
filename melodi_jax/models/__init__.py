"""Build a window-recurrent decoder from gin files: `models.build(gin_files, bindings)`."""

from typing import Sequence

from melodi_jax import gin_config
from melodi_jax.errors import UserError
from melodi_jax.models.config import ModelConfig
from melodi_jax.models.decoder import DecoderLM
from melodi_jax.models import stacks  # noqa: F401  (registers the stack plans with gin)
from melodi_jax.models import baseline_stacks  # noqa: F401  (the baselines' stack plans)


def build_from_gin(segment_length: int | None = None) -> DecoderLM:
  """The DecoderLM of the gin config parsed so far; checks it can work before any tracing."""
  config = ModelConfig()
  config.validate()
  if segment_length is not None and segment_length % config.window_length:
    raise UserError(f'segment length {segment_length} is not a multiple of '
                    f'ModelConfig.window_length = {config.window_length}')
  return DecoderLM(config)


def build(gin_files: Sequence[str] = (), bindings: Sequence[str] = (), *,
          segment_length: int | None = None, search_paths: Sequence[str] = ()) -> DecoderLM:
  """Parses gin files + bindings (gin_config.parse: gin is cleared first) and returns the
  configured DecoderLM."""
  gin_config.parse(gin_files, bindings, search_paths)
  return build_from_gin(segment_length)


__all__ = ['DecoderLM', 'ModelConfig', 'build', 'build_from_gin']
