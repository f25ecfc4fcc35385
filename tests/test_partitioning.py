"""Mesh and shardings on 8 fake CPU devices: the same loss on every mesh, and checkpoints that
move between meshes."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
import pytest

from melodi_jax.train import partitioning
from melodi_jax.errors import UserError
import test_train_support as support


def test_make_mesh_fills_the_data_axis_and_rejects_bad_shapes():
  assert jax.device_count() == 8, 'tests/conftest.py must set 8 fake CPU devices'
  mesh = partitioning.make_mesh((-1, 2))
  assert dict(mesh.shape) == {'data': 4, 'model': 2}
  assert dict(partitioning.make_mesh((1, 1)).shape) == {'data': 1, 'model': 1}
  for bad in [(3, -1), (-1, -1), (16, 1), (0, 1)]:
    with pytest.raises(UserError, match='mesh_shape'):
      partitioning.make_mesh(bad)


def test_params_follow_rules_and_optimizer_state_follows_params():
  model = support.tiny_model()
  mesh = partitioning.make_mesh((4, 2))
  boxed = jax.eval_shape(
      lambda rng: model.init(rng, jnp.zeros((8, 16), jnp.int32), model.init_memory(8),
                             jnp.ones((8, 2), bool))['params'], jax.random.key(0))
  shardings = partitioning.logical_shardings(boxed, mesh, partitioning.default_rules())
  specs = {jax.tree_util.keystr(p): s.spec
           for p, s in jax.tree_util.tree_leaves_with_path(shardings)}
  assert any('model' in spec for spec in specs.values()), specs
  params = nn.meta.unbox(boxed)
  for optimizer in [optax.adamw(1e-3), optax.adafactor(1e-3, min_dim_size_to_factor=8)]:
    opt_state = jax.eval_shape(optimizer.init, params)
    opt_shardings = partitioning.like_param_shardings(opt_state, params, shardings, mesh)
    for (_, leaf), (_, sharding) in zip(jax.tree_util.tree_leaves_with_path(opt_state),
                                        jax.tree_util.tree_leaves_with_path(opt_shardings)):
      sharding.shard_shape(leaf.shape)  # raises unless the sharding fits the leaf


@pytest.mark.slow
def test_same_loss_on_every_mesh_and_checkpoints_move_between_meshes(tmp_path):
  model = support.tiny_model()
  one = support.run_training(tmp_path / 'one', model, mesh_shape=(1, 1), num_steps=3)
  square = support.run_training(tmp_path / 'square', model, mesh_shape=(4, 2), num_steps=2)
  for step in (1, 2):
    assert square[step] == pytest.approx(one[step], abs=1e-5)
  # Step 2 of the (4, 2) run (params, optimizer state, memory, lanes) continues on (1, 1): its
  # step 3 is the one-device run's step 3. (The one-device step is compiled already; moves
  # between process counts on (4, 1) meshes are tested in test_multiprocess.py.)
  moved = support.run_training(tmp_path / 'square', model, mesh_shape=(1, 1), num_steps=3)
  assert moved[3] == pytest.approx(one[3], abs=1e-5)
