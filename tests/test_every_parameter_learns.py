"""Every parameter leaf of every model kind moves under the small-scale training defaults
(configs/optim/small.gin): gate logits, position-bias tables, mixers and initial states included.

Each model trains STEPS steps on random tokens with the optimizer the trainer builds from that gin
file (optim.make_optimizer, then freezing.freeze_lower_layers) and the trainer's loss
(metrics.loss_sums). Every segment is a new document of WINDOWS windows, so memory written in
window 0 is read later in the same segment (its write path gets gradient), and the learned
initial memory, read at every document start, does too.

"Moved": some element of the leaf changed by at least MOVED_FRACTION x sum(lr), where sum(lr) is
how far AdamW's normalised step (~lr per step) takes an element whose gradient keeps its sign.
Any leaf with a gradient gets a full step of ~lr at once (eps is 1e-9). Below the threshold:
weight decay alone (1e-4 x sum(lr) x |value|), and Adafactor with multiply_by_parameter_scale on
a zero-initialised leaf (its step is scaled by max(RMS(leaf), 1e-3)): a leaf without gradient, or
one stuck as the gates were under Adafactor, fails.

Exempt: leaves whose gradient is zero by construction (CONSTANT_BY_CONSTRUCTION). Block-Recurrent's
states attend to each other at one shared position, so their attention's position bias is one
constant per head, which the softmax ignores; that table moved only by float rounding noise that
Adam normalises into full steps (0.15 x sum(lr) with autodiff's softmax backward, 0.015 x with
the attention kernel's), not because anything depends on it.
"""
import functools
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from melodi_jax import models
from melodi_jax.models import freezing
from melodi_jax.train import config as train_config  # noqa: F401  (registers TrainConfig)
from melodi_jax.train import cli, metrics, optim
import zoo

OPTIMIZER_GIN = 'optim/small.gin'
STEPS = 30
BATCH, WINDOWS = 2, 4
MOVED_FRACTION = 0.05

# case -> (zoo config, extra bindings, subtrees frozen by design). The frozen subtrees are the
# only leaves allowed not to move, and they must not move at all.
CASES = {name: (name, (), ()) for name in zoo.CONFIGS}
CONSTANT_BY_CONSTRUCTION = ('state_attention/position_bias/table',)  # path suffixes
CASES['memlong_frozen'] = ('memlong', ('MemLongStack.train_only_above_memory_layer = True',),
                           ('embed', 'layer_00'))


class Trained(NamedTuple):
  initial: Any           # the params tree before training
  final: Any             # and after
  lr_sum: float          # sum of the learning rates of the steps taken
  losses: np.ndarray     # float32[steps]
  frozen: frozenset      # freezing.frozen_names of the model


def train_tiny(name: str, extra_bindings=(), optimizer_gin: str = OPTIMIZER_GIN,
               steps: int = STEPS) -> Trained:
  """Trains zoo model `name` (+ bindings) for `steps` steps on random [BATCH, WINDOWS x W]
  segments, with the optimizer bound by `optimizer_gin`; one compiled program."""
  files, bindings = zoo.CONFIGS[name]
  model = models.build(list(files) + [optimizer_gin], list(bindings) + list(extra_bindings))
  optimizer_config = optim.OptimizerConfig()  # as bound by the gin files just parsed
  tx = freezing.freeze_lower_layers(optim.make_optimizer(optimizer_config, steps), model.config)
  schedule = optim.learning_rate_schedule(optimizer_config, steps)
  length = WINDOWS * model.window_length
  doc_start = jnp.zeros((BATCH, WINDOWS), bool).at[:, 0].set(True)

  def loss_fn(params, tokens, dropout_key):
    logits, _ = model.apply({'params': params}, tokens[:, :-1], model.init_memory(BATCH),
                            doc_start, train=True, rngs={'dropout': dropout_key})
    sums = metrics.loss_sums(logits, tokens[:, 1:], jnp.ones((BATCH, length)),
                             jnp.full((BATCH,), float(length)))
    return sums['nats'] / sums['tokens']

  def step(carry, key):
    params, opt_state = carry
    token_key, dropout_key = jax.random.split(key)
    tokens = jax.random.randint(token_key, (BATCH, length + 1), 0, model.vocab_size)
    loss, grads = jax.value_and_grad(loss_fn)(params, tokens, dropout_key)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss

  # LLVM at -O0: the program runs for a second, compiling it at the default level took twice as
  # long (CPU seconds: 20 vs 11 for vanilla).
  @functools.partial(jax.jit, compiler_options={'xla_backend_optimization_level': 0})
  def run(key):
    init_key, steps_key = jax.random.split(key)
    params = nn.meta.unbox(model.init(init_key, jnp.zeros((BATCH, length), jnp.int32),
                                      model.init_memory(BATCH), doc_start))['params']
    (final, _), losses = jax.lax.scan(step, (params, tx.init(params)),
                                      jax.random.split(steps_key, steps))
    return params, final, losses

  initial, final, losses = run(jax.random.PRNGKey(0))
  return Trained(initial, final, float(sum(schedule(i) for i in range(steps))),
                 np.asarray(losses), freezing.frozen_names(model.config))


def leaf_changes(initial, final) -> dict[str, float]:
  """{'/'-joined leaf path: max |final - initial| over its elements}."""
  paths = [jax.tree_util.keystr(path, simple=True, separator='/')
           for path, _ in jax.tree_util.tree_leaves_with_path(initial)]
  return {path: float(jnp.max(jnp.abs(b - a)))
          for path, a, b in zip(paths, jax.tree.leaves(initial), jax.tree.leaves(final))}


def _under(path: str, names) -> bool:
  return any(part in names for part in path.split('/'))


@pytest.mark.parametrize('case', list(CASES))
def test_every_leaf_moves(case):
  name, extra_bindings, frozen_by_design = CASES[case]
  run = train_tiny(name, extra_bindings)
  assert np.all(np.isfinite(run.losses)), run.losses
  assert run.frozen == frozenset(frozen_by_design), (
      f'{case}: the model freezes {sorted(run.frozen)}, the test allows {frozen_by_design}')
  changes = leaf_changes(run.initial, run.final)
  threshold = MOVED_FRACTION * run.lr_sum
  stuck = {path: f'{change:.1e}' for path, change in changes.items()
           if change < threshold and not _under(path, run.frozen)
           and not path.endswith(CONSTANT_BY_CONSTRUCTION)}
  assert not stuck, (f'{case}: {len(stuck)} of {len(changes)} parameter leaves moved less than '
                     f'{threshold:.1e} (max |change|): {stuck}')
  moved_frozen = {path: change for path, change in changes.items()
                  if _under(path, run.frozen) and change != 0.0}
  assert not moved_frozen, f'{case}: leaves frozen by design changed: {moved_frozen}'
  assert all(any(_under(path, {n}) for path in changes) for n in run.frozen), changes.keys()


def test_small_configs_get_the_small_defaults():
  """The quickstart trains with AdamW and the scaled position bias (ModelConfig's default)."""
  cli.parse_gin(['quickstart.gin'], [])
  assert optim.OptimizerConfig().name == 'adamw'
  assert models.ModelConfig().position_bias_scale == 10.0


def test_the_exempt_leaves_get_no_gradient_by_construction():
  """The premise of CONSTANT_BY_CONSTRUCTION: those leaves' gradient is rounding noise next to
  that of the same kind of leaf elsewhere in the model (the layers' position-bias tables)."""
  model, variables = zoo.build('block_recurrent'), zoo.params('block_recurrent')
  tokens = zoo.random_tokens(BATCH, WINDOWS * model.window_length + 1)

  def loss(params):
    logits, _ = model.apply({'params': params}, tokens[:, :-1], model.init_memory(BATCH),
                            zoo.doc_starts(BATCH, WINDOWS))
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), tokens[:, 1:, None], -1))

  grads = leaf_changes(jax.tree.map(jnp.zeros_like, variables['params']),
                       jax.grad(loss)(variables['params']))  # {path: max |gradient|}
  exempt = {p: g for p, g in grads.items() if p.endswith(CONSTANT_BY_CONSTRUCTION)}
  tables = [g for p, g in grads.items()
            if p.endswith('attention/position_bias/table') and p not in exempt]
  assert exempt and tables, grads.keys()
  assert max(exempt.values()) < 1e-5 * min(tables), (exempt, tables)
