"""The entry points' log filters (train/quiet.py): TensorFlow's start-up lines on a CPU machine
and library chatter go, errors and our own lines stay. The end-to-end check on the real commands
is tests/test_evaluate.py::test_quickstart_style_output_has_no_line_read_as_an_error."""
import logging
import os
import sys

from absl import logging as absl_logging

from melodi_jax.train import quiet

# Verbatim from `import tensorflow` + `tf.config` on a 2-core CPU machine (TF 2.21).
TF_ON_CPU = """\
WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1796282158.731638    6036 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.
I0000 00:00:1796282158.800541    6036 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use available CPU instructions in performance-critical operations.
To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with the appropriate compiler flags.
E0000 00:00:1796282164.201972    6036 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)
"""
REAL = """\
E0000 00:00:1796282164.201972    6036 file_system.cc:99] Could not open /data/x: Permission denied
Traceback (most recent call last):
ImportError: libtensorflow_framework.so.2: cannot open shared object file
"""


def test_tensorflow_start_up_lines_are_dropped_and_real_errors_kept():
  assert all(quiet.is_tensorflow_noise(line) for line in TF_ON_CPU.splitlines())
  assert not any(quiet.is_tensorflow_noise(line) for line in REAL.splitlines())


def test_filtered_stderr_replays_what_is_not_noise_also_on_an_exception(capfd):
  try:
    with quiet.filtered_stderr():
      os.write(2, (TF_ON_CPU + REAL).encode())
      raise ImportError('the import failed')
  except ImportError:
    pass
  assert capfd.readouterr().err == REAL


def _record(path, level, message):
  return logging.LogRecord('absl', level, path, 1, message, None, None)


def test_library_filter_keeps_ours_and_actionable_warnings():
  keep = quiet.LibraryLogFilter().filter
  orbax = '/venv/site-packages/orbax/checkpoint/checkpoint_manager.py'
  ours = '/repo/melodi_jax/train/trainer.py'
  assert keep(_record(ours, logging.INFO, 'step 25/300  loss 2.1'))
  assert not keep(_record(orbax, logging.INFO, 'Saving checkpoint'))
  assert not keep(_record('/site-packages/matplotlib/font_manager.py', logging.INFO,
                          'generated new fontManager'))
  assert not keep(_record(orbax, logging.WARNING, 'CheckpointManagerOptions.read_only=True, '
                          'setting save_interval_steps=0.'))
  assert not keep(_record('/site-packages/orbax/x/type_handler_registry.py', logging.WARNING,
                          'Type handler registry type "<class jax.Array>" overriding jax.Array'))
  assert keep(_record(orbax, logging.WARNING, 'checkpoint 400 is incomplete'))
  assert keep(_record(orbax, logging.ERROR, 'could not write'))


def test_verbose_turns_the_filters_off(monkeypatch):
  handler = absl_logging.get_absl_handler()
  before, finders = list(handler.filters), list(sys.meta_path)
  try:
    monkeypatch.setenv(quiet.VERBOSE_ENV, '1')
    assert quiet.verbose()
    quiet.setup()
    assert not any(isinstance(f, quiet.LibraryLogFilter) for f in handler.filters)
    monkeypatch.setenv(quiet.VERBOSE_ENV, '0')
    assert not quiet.verbose()
    quiet.setup()
    assert any(isinstance(f, quiet.LibraryLogFilter) for f in handler.filters)
  finally:
    for f in list(handler.filters):
      if f not in before:
        handler.removeFilter(f)
    sys.meta_path[:] = finders
