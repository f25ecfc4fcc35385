"""MemorizingStack.train_memory_slots: a training buffer sized for one-segment documents computes
exactly what the full buffer computes (the empty slots get no weight), and the trainer uses it only
for the train step."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from melodi_jax.errors import UserError
from melodi_jax.models import DecoderLM, ModelConfig
from melodi_jax.models.baseline_stacks import MemorizingStack

WINDOW, WINDOWS = 8, 4


def _config(top_k: int, train_slots: int) -> ModelConfig:
  return ModelConfig(vocab_size=256, num_layers=2, model_dim=16, num_heads=2, head_dim=8,
                     mlp_dim=32, window_length=WINDOW, dropout_rate=0.0, dtype='float32',
                     stack=MemorizingStack(memory_layer=1, memory_slots=8 * WINDOW, top_k=top_k,
                                           train_memory_slots=train_slots))


def _loss_and_grads(config: ModelConfig, params, tokens, doc_start):
  model = DecoderLM(config)

  def loss(p):
    logits, _ = model.apply({'params': p}, tokens, model.init_memory(tokens.shape[0]), doc_start)
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits[:, :-1]),
                                         tokens[:, 1:, None], axis=-1))
  return jax.value_and_grad(loss)(params)


@pytest.mark.parametrize('top_k', [0, 4])
def test_training_buffer_that_holds_the_document_changes_nothing(top_k):
  full = _config(top_k, train_slots=WINDOWS * WINDOW)   # one segment = one document here
  train = full.for_training()
  assert train.stack.memory_slots == WINDOWS * WINDOW and full.stack.memory_slots == 8 * WINDOW
  tokens = jax.random.randint(jax.random.PRNGKey(0), (2, WINDOWS * WINDOW), 0, 32)
  doc_start = np.zeros((2, WINDOWS), bool)
  doc_start[:, 0] = True
  model = DecoderLM(full)
  params = model.init(jax.random.PRNGKey(1), tokens, model.init_memory(2), doc_start)['params']
  loss_full, grads_full = _loss_and_grads(full, params, tokens, doc_start)
  loss_train, grads_train = _loss_and_grads(train, params, tokens, doc_start)
  np.testing.assert_allclose(loss_train, loss_full, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               grads_train, grads_full)
  # A buffer of one window cannot hold the document: the check above can fail.
  small = dataclasses.replace(full, stack=dataclasses.replace(full.stack, train_memory_slots=WINDOW))
  loss_small, _ = _loss_and_grads(small.for_training(), params, tokens, doc_start)
  assert abs(float(loss_small) - float(loss_full)) > 1e-4


def test_other_plans_train_as_they_evaluate_and_bad_sizes_are_user_errors():
  config = _config(0, train_slots=0)
  assert config.for_training() is config
  with pytest.raises(UserError, match='train_memory_slots = 128 must be 0'):
    _config(0, train_slots=128).layer_options()
  with pytest.raises(UserError, match='train_memory_slots = 4 must be 0'):
    _config(0, train_slots=4).layer_options()


def test_the_trainer_steps_with_the_training_buffer_and_evaluates_with_the_full_one(
    tmp_path, monkeypatch):
  import test_train_support as support  # pylint: disable=import-outside-toplevel
  from melodi_jax.train import evaluator, trainer  # pylint: disable=import-outside-toplevel
  seen = {}

  def spy(name, original):
    def wrapped(model, *args, **kwargs):
      seen[name] = model.config.stack.memory_slots
      return original(model, *args, **kwargs)
    return wrapped

  monkeypatch.setattr(trainer, 'make_train_step', spy('train', trainer.make_train_step))
  monkeypatch.setattr(evaluator, 'Evaluator', spy('eval', evaluator.Evaluator))
  config = _config(0, train_slots=support.SEGMENT)
  losses = support.run_training(tmp_path, model=DecoderLM(config), num_steps=2, eval_every=2)
  assert sorted(losses) == [1, 2] and seen == {'train': support.SEGMENT, 'eval': 8 * WINDOW}
