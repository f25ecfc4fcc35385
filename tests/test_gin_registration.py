"""Gin configurables are registered whatever the import order: each scenario runs in a fresh
Python process that imports only what its entry point imports, so the modules the rest of the
suite has already loaded cannot hide a configurable registered too late."""
import os
import subprocess
import sys
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# One binding for every configurable a run config may set, beyond the model's.
RUN_BINDINGS = ['TrainConfig.num_steps = 1', 'OptimizerConfig.warmup_steps = 1',
                'MQARConfig.key_tokens = 2']


def _run(code, *args):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  env['PYTHONPATH'] = os.pathsep.join([REPO] + [p for p in [env.get('PYTHONPATH')] if p])
  return subprocess.run([sys.executable, *args] if args else
                        [sys.executable, '-c', textwrap.dedent(code)],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_data_layer_imports_after_a_model_is_built():
  """models.build, then the data layer (the trainer's stream opens it after the model is
  built): registering the data tasks' configurables must not find gin locked."""
  result = _run('''
      from melodi_jax import models
      models.build(['models/melodi.gin', 'sizes/tiny.gin'])
      from melodi_jax.data import mqar
      from melodi_jax.train import trainer
      print('registered', mqar.MQARConfig().key_tokens)
      ''')
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'registered 1' in result.stdout


def test_run_cli_parses_every_configurable_from_a_fresh_process():
  """train/cli.parse_gin (train, evaluate, generate, experiments) with nothing imported before."""
  result = _run(f'''
      import gin
      from melodi_jax.train import cli
      cli.parse_gin(['quickstart.gin'], {RUN_BINDINGS!r}, [])
      print('key_tokens', gin.query_parameter('MQARConfig.key_tokens'))
      ''')
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'key_tokens 2' in result.stdout


def test_footprint_cli_reads_a_run_config():
  """bench_lib's parser (footprint, bench) accepts a run's config, not only a model's."""
  flags = ['--gin_file=quickstart.gin'] + [f'--gin_bindings={b}' for b in RUN_BINDINGS]
  result = _run(None, '-m', 'melodi_jax.footprint', *flags)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'quickstart' in result.stdout, result.stdout
