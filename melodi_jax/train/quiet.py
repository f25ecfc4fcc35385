"""Quiet by default: what every entry point prints is ours (progress, results, warnings a user can
act on, errors), not the start-up chatter of the libraries under it.

Two sources of noise, two filters:
- TensorFlow (only an input-pipeline and TensorBoard-writer dependency) prints C++ lines on
  import that look like failures on a CPU machine ("failed call to cuInit", "Could not find cuda
  drivers", the absl::InitializeLog prelude). They go straight to file descriptor 2, so its import
  runs with fd 2 captured and replayed without them. It is also kept off the accelerators, which
  belong to JAX.
- Python logging of libraries: their INFO lines are dropped and a few warnings that need no action
  (orbax announcing its own settings) are filtered on the absl handler.

`MELODI_VERBOSE=1` or `--verbosity=1` (absl's flag) turns both filters off. Errors always print.
"""
from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import logging
import os
import re
import sys
import tempfile

VERBOSE_ENV = 'MELODI_VERBOSE'

# Lines TensorFlow's import prints on a machine without CUDA (or with the CPU build): none of them
# is a problem for us, and three of them read like one.
_TF_NOISE = re.compile('|'.join([
    r'All log messages before absl::InitializeLog\(\) is called',
    r'^[IW]\d{4} ',                                    # C++ INFO/WARNING lines (glog format)
    r'cuInit', r'cuda drivers', r'cuda_platform\.cc', r'cudart_stub\.cc', r'cuda_dnn\.cc',
    r'Unable to register cu(DNN|FFT|BLAS) factory', r'TF-TRT Warning',
    r'oneDNN custom operations are on', r'^To enable the following instructions',
    r'computation placer already registered',
]))

# Library warnings that ask nothing of the user: orbax on its own options when a checkpoint
# folder is opened read-only, on our array handler replacing its default, and on a merge step
# its single-process async saves skip.
_NOT_ACTIONABLE = re.compile('|'.join([
    r'^Type handler registry type .* overriding',
    r'^CheckpointManagerOptions\.read_only=True, setting',
    r'^Given directory is read only=',
    r'Skipping merge of OCDBT checkpoints: No per-process OCDBT checkpoint subdirs found',
]))


def verbose() -> bool:
  """True when the user asked for every library line: MELODI_VERBOSE=1 or --verbosity >= 1."""
  if os.environ.get(VERBOSE_ENV, '').strip() not in ('', '0'):
    return True
  from absl import flags  # pylint: disable=g-import-not-at-top
  return flags.FLAGS.is_parsed() and 'verbosity' in flags.FLAGS and flags.FLAGS.verbosity >= 1


def is_tensorflow_noise(line: str) -> bool:
  return bool(_TF_NOISE.search(line))


class LibraryLogFilter(logging.Filter):
  """Keeps every record of melodi_jax; of other code, warnings and errors that need action."""

  def filter(self, record: logging.LogRecord) -> bool:
    path = record.pathname.replace(os.sep, '/')
    if '/melodi_jax/' in path or path.endswith('/absl/app.py'):
      return True
    if record.levelno < logging.WARNING:
      return False
    return not _NOT_ACTIONABLE.search(record.getMessage())


@contextlib.contextmanager
def filtered_stderr(drop=is_tensorflow_noise):
  """Captures file descriptor 2 (C++ and Python writes alike) and replays the lines `drop`
  rejects when the block ends, also when it raises."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as capture:
    os.dup2(capture.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      capture.seek(0)
      text = capture.read().decode('utf-8', errors='replace')
      kept = [line for line in text.splitlines(keepends=True) if not drop(line)]
      if kept:
        os.write(2, ''.join(kept).encode())


def _hide_accelerators(tensorflow):
  """TensorFlow only feeds data and writes events: the GPUs stay JAX's (TF would otherwise
  reserve their memory)."""
  try:
    tensorflow.config.set_visible_devices([], 'GPU')
  except (RuntimeError, ValueError, AttributeError):  # already initialised, or no tf.config
    pass


class _TensorFlowImport(importlib.abc.MetaPathFinder):
  """Wraps the first `import tensorflow` (whoever triggers it: clu, seqio, tfds)."""

  def __init__(self, quiet: bool):
    self.quiet = quiet
    self._searching = False

  def find_spec(self, name, path=None, target=None):
    del path, target
    # Libraries also probe with importlib.util.find_spec('tensorflow') without importing it, so
    # every lookup gets a wrapped spec until the import has happened.
    if name != 'tensorflow' or self._searching or name in sys.modules:
      return None
    self._searching = True
    try:
      spec = importlib.util.find_spec(name)  # the regular finders locate the package
    finally:
      self._searching = False
    if spec is None or spec.loader is None or not hasattr(spec.loader, 'exec_module'):
      return spec
    exec_module, quiet = spec.loader.exec_module, self.quiet

    def exec_quietly(module):
      with filtered_stderr() if quiet else contextlib.nullcontext():
        exec_module(module)
        _hide_accelerators(module)

    spec.loader.exec_module = exec_quietly
    return spec


def setup():
  """Called by the entry points once flags are parsed, before anything imports TensorFlow."""
  quiet = not verbose()
  if 'tensorflow' in sys.modules:
    _hide_accelerators(sys.modules['tensorflow'])
  elif not any(isinstance(f, _TensorFlowImport) for f in sys.meta_path):
    sys.meta_path.insert(0, _TensorFlowImport(quiet))
  if quiet:
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # TF's later C++ INFO/WARNING lines
    from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
    handler = absl_logging.get_absl_handler()
    if not any(isinstance(f, LibraryLogFilter) for f in handler.filters):
      handler.addFilter(LibraryLogFilter())
