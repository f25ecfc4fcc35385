"""Warm start: a vanilla checkpoint loads into MELODI by name and shape, bit for bit; the loaded
parameters can stay frozen for K steps; a short fine-tune from it beats the same steps from
scratch on validation loss."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import test_train_support as support
from melodi_jax import models
from melodi_jax.train import checkpoints, warm_start

pytestmark = pytest.mark.slow  # scheduled first (tests/conftest.py)

TINY = ['sizes/tiny.gin']
SEGMENT, BATCH = 32, 4


def _model(kind):
  return models.build([f'models/{kind}.gin'] + TINY)


def _abstract_params(model):
  def init(rng):
    tokens = jnp.zeros((1, model.window_length), jnp.int32)
    return model.init(rng, tokens, model.init_memory(1), jnp.ones((1, 1), bool))['params']
  import flax.linen as nn
  return nn.meta.unbox(jax.eval_shape(init, jax.random.key(0)))


def _train(workdir, model, steps, checkpoint_every=None, **kwargs):
  """The trainer on the synthetic_bytes task (learnable words) -> validation nats/token.
  Checkpoints at the last step only unless `checkpoint_every` (each save costs ~1 s)."""
  config = support.train_config(num_steps=steps, batch_size=BATCH, segment_length=SEGMENT,
                                log_every=steps, checkpoint_every=checkpoint_every or steps,
                                keep_checkpoints=100,
                                task='synthetic_bytes')
  state = support.trainer.train(config, str(workdir), model=model,
                                optimizer_config=support.optimizer(name='adamw',
                                                                   peak_learning_rate=3e-3),
                                **kwargs)
  return _validation_loss(model, state.params)


def _validation_loss(model, params, batches=6):
  from melodi_jax import data
  from melodi_jax.train import metrics
  lanes = data.make_lanes('synthetic_bytes', 'validation', batch_size=BATCH,
                          segment_length=SEGMENT, window_length=model.window_length, train=False)
  apply = jax.jit(model.apply)
  memory, nats, tokens = model.init_memory(BATCH), 0.0, 0.0
  for _, batch in zip(range(batches), lanes):
    logits, memory = apply({'params': params}, batch['inputs'], memory, batch['doc_start'])
    sums = metrics.loss_sums(logits, batch['targets'], batch['loss_weights'], batch['bytes'])
    nats, tokens = nats + float(sums['nats']), tokens + float(sums['tokens'])
  return nats / tokens


def _params(workdir, step):
  checkpointer = checkpoints.Checkpointer(str(workdir), read_only=True)
  import orbax.checkpoint as ocp
  params = checkpointer.manager.restore(step, args=ocp.args.Composite(
      params=ocp.args.StandardRestore()))['params']
  checkpointer.close()
  return {warm_start._name(p): np.asarray(v)
          for p, v in jax.tree_util.tree_leaves_with_path(params)}


@pytest.fixture(scope='module')
def vanilla_run(tmp_path_factory):
  os.environ.setdefault('MELODI_DATA_DIR', str(tmp_path_factory.mktemp('data')))
  workdir = tmp_path_factory.mktemp('warm') / 'vanilla'
  _train(workdir, _model('vanilla'), 60)
  return workdir


def test_plan_matches_names_and_shapes(vanilla_run):
  """Every vanilla parameter has a MELODI namesake of the same shape; MELODI's memory parts are
  created; a wider MLP is created fresh and the source's narrower one ignored."""
  melodi = _abstract_params(_model('melodi'))
  warm = warm_start.plan(str(vanilla_run), melodi)
  vanilla = _abstract_params(_model('vanilla'))
  assert set(warm.loaded) == {warm_start._name(p) for p, _ in
                              jax.tree_util.tree_leaves_with_path(vanilla)}
  assert warm.ignored == () and warm.step == 60
  assert any('summary_tokens' in n for n in warm.created)
  assert any('short_term_mixer' in n for n in warm.created)
  assert any('gate_logit' in n for n in warm.created)
  wide = _abstract_params(models.build(['models/melodi.gin'] + TINY,
                                       ['ModelConfig.mlp_dim = 48']))
  warm = warm_start.plan(os.path.join(str(vanilla_run), 'checkpoints', '60'), wide)
  assert 'stack/layer_00/mlp/wi/kernel' in warm.created
  assert 'stack/layer_00/mlp/wi/kernel' in warm.ignored
  assert 'stack/layer_00/attention/query/kernel' in warm.loaded


def test_freeze_loaded_keeps_masked_parameters_for_k_steps():
  params = {'a': jnp.ones(3), 'b': jnp.ones(3)}
  tx = warm_start.freeze_loaded(optax.adamw(0.1), {'a': True, 'b': False}, steps=2)
  state = tx.init(params)
  grads = {'a': jnp.ones(3), 'b': jnp.ones(3)}
  for step in range(3):
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    assert bool((params['a'] == 1).all()) == (step < 2), step
    assert not bool((params['b'] == 1).any())


def test_vanilla_into_melodi_bit_identical_and_better_than_scratch(vanilla_run, tmp_path):
  """Warm start (loaded layers frozen for the first step) vs. scratch, the same 12 steps: after
  the frozen step every loaded tensor equals the source bit for bit; the validation loss after
  12 steps is lower from the warm start."""
  source = _params(vanilla_run, 60)
  melodi = _model('melodi')
  warm_dir, scratch_dir = tmp_path / 'warm', tmp_path / 'scratch'
  warm_loss = _train(warm_dir, melodi, 12, checkpoint_every=1, init_from=str(vanilla_run),
                     freeze_loaded_steps=1)
  first = _params(warm_dir, 1)
  report = json.loads((warm_dir / 'warm_start.json').read_text())
  assert report['step'] == 60 and len(report['loaded']) == len(source)
  for name in report['loaded']:
    np.testing.assert_array_equal(first[name], source[name], err_msg=name)
  assert not np.array_equal(_params(warm_dir, 2)[report['loaded'][0]], source[report['loaded'][0]])
  scratch_loss = _train(scratch_dir, melodi, 12)
  print(f'validation nats/token after 12 steps: warm start {warm_loss:.4f}, scratch '
        f'{scratch_loss:.4f}')
  assert warm_loss < scratch_loss


def test_init_from_without_checkpoints_is_a_user_error(tmp_path):
  with pytest.raises(warm_start.UserError, match='--init_from'):
    warm_start.locate(str(tmp_path / 'no_run'))
