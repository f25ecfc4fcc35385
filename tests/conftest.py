"""Test session setup: CPU only, 8 fake devices for sharding tests (set before JAX loads), one
XLA compilation cache per test session, and the slow tests scheduled first.

The compilation cache: most of the suite's CPU time is XLA compiling tiny models (whose steps then
run for milliseconds), and many tests, and the trainer subprocesses of the resume, warm-start and
multi-process tests (they inherit the environment), compile the same programs again. A directory
made by the controlling pytest process (before xdist starts its workers) and removed at its exit
serves them all; a run never reads another run's entries. A cached executable is the same compiled
program, so numerics and bit-exact resume are unchanged. (A lower LLVM optimisation level would
save more compile time, but it changes rounding: the tests run the machine code users run.)
MELODI_TEST_COMPILATION_CACHE=0 compiles everything afresh.
"""
import atexit
import os
import shutil
import tempfile

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

if (os.environ.get('MELODI_TEST_COMPILATION_CACHE', '1') != '0'
    and 'JAX_COMPILATION_CACHE_DIR' not in os.environ):
  _cache_dir = tempfile.mkdtemp(prefix='melodi_jax_tests_xla_cache_')
  atexit.register(shutil.rmtree, _cache_dir, ignore_errors=True)
  os.environ['JAX_COMPILATION_CACHE_DIR'] = _cache_dir
  # Cache every program, however small or quick to compile (JAX's defaults skip those).
  os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
  os.environ['JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES'] = '-1'


def pytest_collection_modifyitems(items):
  """Tests marked `slow` (a minute or more on 2 cores) run first: with the slow ones last, the
  xdist workers would end the session running them one after another while the others idle."""
  items.sort(key=lambda item: item.get_closest_marker('slow') is None)
