"""Streaming generation: the token-by-token path computes the forward pass's log-probabilities for
every model kind; prefill hands over to it; seeded sampling repeats; the CLI on a run folder."""

import os
import subprocess
import sys

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zoo
from melodi_jax import models
from melodi_jax.models import decoding
from melodi_jax.train import checkpoints, cli, config, optim  # noqa: F401  (gin configurables)

ALL = sorted(zoo.CONFIGS)
BATCH, WINDOWS = 2, 4
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _log_probs(logits):
  return np.asarray(jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), axis=-1))


@pytest.mark.parametrize('name', ALL)
def test_token_by_token_log_probs_equal_forward_pass(name):
  """4 windows fed one token at a time (3 window boundaries; lane 1 starts a new document at
  window 2) give the log-probabilities of the window-at-a-time forward pass to 1e-4."""
  model, variables = zoo.build(name), zoo.params(name)
  w = model.window_length
  tokens = zoo.random_tokens(BATCH, WINDOWS * w, seed=11)
  doc_start = zoo.doc_starts(BATCH, WINDOWS).at[1, 2].set(True)
  forward, memory = zoo.jitted_apply(model)(variables, tokens, model.init_memory(BATCH),
                                            doc_start)
  decoder = decoding.Decoder(model, variables['params'])
  stepped, state = decoder.logits_by_token(tokens, doc_start)
  np.testing.assert_allclose(_log_probs(stepped), _log_probs(forward), atol=1e-4, rtol=0,
                             err_msg=name)
  # After the last full window the stream's memory is the forward pass's memory.
  assert int(state.cache['index']) == 0
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5),
                         state.memory, memory)


@pytest.mark.parametrize('name', ['melodi', 'memlong'])
def test_prefill_hands_over_to_token_steps(name):
  """A prompt of 2 windows + 3 tokens (whole windows scanned, the rest stepped), then teacher-
  forced steps: the same log-probabilities as the forward pass, before and after the handover."""
  model, variables = zoo.build(name), zoo.params(name)
  w = model.window_length
  tokens = zoo.random_tokens(BATCH, WINDOWS * w, seed=12)
  forward, _ = zoo.jitted_apply(model)(variables, tokens, model.init_memory(BATCH),
                                       zoo.doc_starts(BATCH, WINDOWS))
  decoder = decoding.Decoder(model, variables['params'], prefill_windows=2)
  prompt = 2 * w + 3
  state = decoder.prefill(decoder.start(BATCH), tokens[:, :prompt])
  np.testing.assert_allclose(_log_probs(state.logits), _log_probs(forward[:, prompt - 1]),
                             atol=1e-4, rtol=0)
  rest, _ = decoder.logits_by_token(tokens[:, prompt:], state=state)
  np.testing.assert_allclose(_log_probs(rest), _log_probs(forward[:, prompt:]), atol=1e-4, rtol=0)


def test_sampling_is_seeded_and_greedy_follows_the_stream():
  """Same seed, same tokens; another seed, other tokens; greedy decoding over 2 window boundaries
  picks the argmax of the stream's own teacher-forced logits at every step; a prompt shorter than
  a window works."""
  model, variables = zoo.build('melodi'), zoo.params('melodi')
  w = model.window_length
  decoder = decoding.Decoder(model, variables['params'])
  prompt = zoo.random_tokens(1, 3, seed=13)   # shorter than a window
  state = decoder.prefill(decoder.start(1), prompt)
  count = 2 * w + 2  # 5, 8 and 5 tokens in three windows: two programs per temperature
  first, _ = decoder.generate(state, count, jax.random.key(1), temperature=1.0)
  again, _ = decoder.generate(state, count, jax.random.key(1), temperature=1.0)
  other, _ = decoder.generate(state, count, jax.random.key(2), temperature=1.0)
  np.testing.assert_array_equal(first, again)
  assert first.shape == (1, count) and not np.array_equal(first, other)

  greedy, _ = decoder.generate(state, count, jax.random.key(0), temperature=0.0)
  stream = np.concatenate([np.asarray(prompt), greedy], axis=1)
  logits, _ = decoder.logits_by_token(stream[:, :-1])
  np.testing.assert_array_equal(np.argmax(logits[:, prompt.shape[1] - 1:], axis=-1), greedy)


def test_top_k_samples_only_the_k_most_likely():
  logits = jnp.log(jnp.array([[0.05, 0.5, 0.05, 0.3, 0.1]] * 64))
  keys = jax.random.split(jax.random.key(0), 20)
  drawn = np.stack([decoding.sample_token(logits, k, temperature=1.0, top_k=2) for k in keys])
  assert set(np.unique(drawn)) == {1, 3}
  np.testing.assert_array_equal(decoding.sample_token(logits, keys[0], temperature=0.0), 1)


# ----------------------------------------------------------------------------------- the CLI

@pytest.fixture(scope='module')
def run_folder(tmp_path_factory):
  """A run folder as the trainer leaves it: the operative config.gin and an orbax checkpoint
  (the trainer's Checkpointer) of tiny MELODI parameters at step 3."""
  workdir = tmp_path_factory.mktemp('generate') / 'run'
  params = zoo.params('melodi')['params']
  gin.clear_config()
  cli.parse_gin(['models/melodi.gin', 'sizes/tiny.gin', 'runtime/cpu.gin'], [], [])
  config.TrainConfig()
  model = models.build_from_gin()
  os.makedirs(workdir)
  (workdir / 'config.gin').write_text(gin.operative_config_str())
  checkpointer = checkpoints.Checkpointer(str(workdir))
  checkpointer.save(3, params=params, opt_state={'count': jnp.zeros((), jnp.int32)},
                    memory=model.init_memory(1), progress={'step': 3})
  checkpointer.wait()
  checkpointer.close()
  gin.clear_config()
  return workdir


def _generate(*flags):
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=REPO)
  env.pop('XLA_FLAGS', None)
  return subprocess.run([sys.executable, '-m', 'melodi_jax.generate', *flags], env=env,
                        capture_output=True, timeout=300)


def test_cli_returns_the_prompt_then_new_text(run_folder, tmp_path):
  """--max_new_tokens=0 writes the prompt back byte for byte (a prompt shorter than a window,
  not valid UTF-8 at its end); 11 new tokens cross a window boundary and follow the prompt."""
  prompt = tmp_path / 'prompt.txt'
  prompt.write_bytes('Zoë\n'.encode('utf-8') + b'\xc3')
  result = _generate(f'--workdir={run_folder}', f'--prompt_file={prompt}', '--max_new_tokens=0')
  assert result.returncode == 0, result.stderr.decode()[-3000:]
  assert result.stdout == prompt.read_bytes()
  output = tmp_path / 'out.txt'
  result = _generate(f'--workdir={run_folder}', '--step=3', f'--prompt_file={prompt}',
                     '--max_new_tokens=11', '--seed=4', '--top_k=50', f'--output={output}')
  assert result.returncode == 0, result.stderr.decode()[-3000:]
  text = output.read_bytes()
  assert text.startswith(prompt.read_bytes()) and len(text) > len(prompt.read_bytes())


@pytest.mark.parametrize('flags, needle', [
    (['--prompt_file=/no/such/prompt.txt'], '--prompt_file'),
    (['--max_new_tokens=-1'], '--max_new_tokens'),
    (['--no_such_flag=1'], 'no_such_flag'),
    (['--step=99'], 'step 99'),
    (['EMPTY_WORKDIR'], 'config.gin'),
], ids=['missing_prompt', 'negative_tokens', 'bad_flag', 'missing_step', 'empty_workdir'])
def test_cli_user_errors_exit_2_with_one_line(run_folder, tmp_path, flags, needle):
  prompt = tmp_path / 'prompt.txt'
  prompt.write_text('hello')
  workdir = run_folder
  if flags == ['EMPTY_WORKDIR']:
    workdir, flags = tmp_path / 'empty', []
    workdir.mkdir()
  result = _generate(f'--workdir={workdir}', f'--prompt_file={prompt}', *flags)
  stderr = result.stderr.decode()
  errors = [line for line in stderr.splitlines() if line.startswith('error: ')]
  assert result.returncode == 2 and len(errors) == 1, stderr[-3000:]
  assert needle in errors[0] and 'Traceback' not in stderr, errors[0]
