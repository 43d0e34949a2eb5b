"""checkpointing.py in-process on the tiny config and 8 forced CPU devices: exact round trips
(the global pools included, and per-device pools of older versions), config mismatches named
by tree, refusal of non-finite states, keep-N, and recovery from a save that a crash cut short.

The end-to-end behaviour (resume, kill -9, SIGTERM, topology changes) is in test_train_loop.py.
"""

import importlib
import shutil

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from cyclegan_jax import checkpointing, parallel
from cyclegan_jax.families import cyclegan
from cyclegan_jax.models import block_layout
from tests import helpers
from tests.helpers import complete_steps, host_tree

N_DEVICES = 8
STEPS_PER_EPOCH = 8


def tiny_config(**model):
  config = importlib.import_module('configs.test').get_config()
  config.model.update(model)
  return config


def fresh_state(config):
  """The structure, shapes and dtypes of `create_train_state`, filled with zeros: all a restore
  template needs, traced but not compiled (compiling the four inits takes ~30 s here)."""
  models = cyclegan.create_models(config, STEPS_PER_EPOCH)
  key = jax.random.key(config.seed)
  shapes = jax.eval_shape(lambda: cyclegan.create_train_state(config, models, key))
  zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes.replace(rng=None))
  return zeros.replace(rng=key)


def assert_trees_equal(expected, actual):
  want = jax.tree_util.tree_leaves_with_path(host_tree(expected))
  got = jax.tree_util.tree_leaves_with_path(host_tree(actual))
  assert [p for p, _ in want] == [p for p, _ in got]
  for (path, x), (_, y) in zip(want, got):
    assert x.dtype == y.dtype and np.array_equal(x, y), jax.tree_util.keystr(path)


@pytest.fixture(scope='module')
def config():
  return tiny_config()


@pytest.fixture(scope='module')
def template(config):
  assert jax.local_device_count() == N_DEVICES, 'tests/conftest.py forces 8 CPU devices'
  return fresh_state(config)


@pytest.fixture(scope='module')
def trained(template):
  """A replicated state at step 7 whose every leaf differs from `template`, pools included
  (one global pool per domain, the same on every device)."""
  rng = np.random.default_rng(0)
  perturb = lambda x: x + rng.normal(size=x.shape).astype(x.dtype) if np.issubdtype(
      x.dtype, np.floating) else x
  pools = jax.tree.map(np.copy, template.pools)
  for pool in pools.values():
    pool.images[...] = rng.uniform(-1, 1, pool.images.shape)
    pool.count[...] = pool.images.shape[0] - 1
  return parallel.replicate(template.replace(
      step=np.int32(7), pools=pools, params=jax.tree.map(perturb, template.params),
      opt_state_g=jax.tree.map(perturb, template.opt_state_g),
      opt_state_d=jax.tree.map(perturb, template.opt_state_d), rng=jax.random.key(123)))


@pytest.fixture(scope='module')
def saved(tmp_path_factory, config, trained):
  """A workdir holding `trained` as step 7."""
  workdir = tmp_path_factory.mktemp('saved')
  manager = checkpointing.create_manager(workdir, keep=3)
  try:
    assert checkpointing.save(manager, trained, config) == 7
  finally:
    manager.wait_until_finished()
    manager.close()
  return workdir


def restore(workdir, template, **kwargs):
  manager = checkpointing.create_manager(workdir, keep=3)
  try:
    return manager.latest_step(), checkpointing.restore(manager, template, **kwargs)
  finally:
    manager.close()


def test_round_trip_is_exact_with_one_saved_pool(saved, template, trained):
  step, restored = restore(saved, template)
  assert step == 7
  assert_trees_equal(trained, restored)
  for pool in jax.tree.leaves(restored.pools):
    assert len(pool.sharding.device_set) == N_DEVICES  # Laid out as pmap expects.
  _, pools = helpers.restore(saved, 7)
  assert pools['a']['images'].shape[0] == 1  # One copy of the global pool, not one per device.


def test_a_checkpoint_with_a_pool_per_device_restores_device_0s_everywhere(tmp_path, config,
                                                                           template, trained):
  """Checkpoints of versions before the global pool saved [devices, ...] pools."""
  host = jax.tree.map(lambda x: x[0], host_tree(trained))
  pools = jax.tree.map(lambda x: np.stack([x, x + 1]),
                       flax.serialization.to_state_dict(host.pools))
  _save_as_written_before(tmp_path, flax.serialization.to_state_dict(host.replace(pools={})),
                          pools, config)
  _, restored = restore(tmp_path, template)
  assert_trees_equal(trained, restored)


def _save_as_written_before(directory, state, pools, config):
  """Step 7 saved with orbax directly: the layout of a checkpoint written by an older version."""
  manager = checkpointing.create_manager(directory, keep=1)
  manager.save(7, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                          pools=ocp.args.StandardSave(pools),
                                          config=ocp.args.JsonSave(config.to_dict())))
  manager.wait_until_finished()
  manager.close()


def test_a_checkpoint_with_one_subtree_per_residual_block_restores_stacked(tmp_path, config,
                                                                           template, trained):
  """Checkpoints of versions before the generators' scan hold ResnetBlock_0 … ResnetBlock_{n-1}
  in the parameters and in the optimizer's moments."""
  host = jax.tree.map(lambda x: x[0], host_tree(trained))
  state = block_layout.unstack_blocks(flax.serialization.to_state_dict(host.replace(pools={})))
  paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(state)]
  assert not any(block_layout.BLOCKS in p for p in paths)
  for tree in ("['params']['g_ab']", "['opt_state_g']"):
    assert any(p.startswith(tree) and "['ResnetBlock_1']" in p for p in paths), tree
  pools = jax.tree.map(lambda x: x[None], flax.serialization.to_state_dict(host.pools))
  _save_as_written_before(tmp_path, state, pools, config)
  _, restored = restore(tmp_path, template)
  assert_trees_equal(trained, restored)


def test_config_is_saved_beside_the_state(saved, config):
  manager = checkpointing.create_manager(saved, keep=3)
  try:
    assert checkpointing.restored_config(manager) == config.to_dict()
  finally:
    manager.close()


def test_mismatched_config_names_the_trees(saved):
  with pytest.raises(checkpointing.CheckpointMismatchError) as error:
    restore(saved, fresh_state(tiny_config(ngf=4)))
  message = str(error.value)
  assert 'params/g_ab' in message and 'params/g_ba' in message
  assert 'params/d_a' not in message  # ndf is unchanged: the discriminators fit.


def test_save_refuses_a_non_finite_state(tmp_path, config, trained):
  path, _ = jax.tree_util.tree_leaves_with_path(trained.params['g_ab'])[0]
  poison = lambda p, x: x.at[..., 0].set(jnp.nan) if p == path else x
  bad = trained.replace(params={**trained.params, 'g_ab': jax.tree_util.tree_map_with_path(
      poison, trained.params['g_ab'])})
  manager = checkpointing.create_manager(tmp_path, keep=3)
  try:
    with pytest.raises(FloatingPointError, match='non-finite') as error:
      checkpointing.save(manager, bad, config)
    manager.wait_until_finished()
    assert manager.latest_step() is None
  finally:
    manager.close()
  assert f"['params']['g_ab']{jax.tree_util.keystr(path)}" in str(error.value)


def test_keeps_the_newest_checkpoints(tmp_path, config, template):
  manager = checkpointing.create_manager(tmp_path, keep=2)
  try:
    for step in range(1, 6):
      checkpointing.save(manager, parallel.replicate(
          template.replace(step=np.int32(step))), config)
  finally:
    manager.wait_until_finished()
    manager.close()
  assert complete_steps(tmp_path) == [4, 5]


def test_a_relative_workdir_saves_and_restores(tmp_path, monkeypatch, config, template):
  """orbax refuses relative paths at its first save; `--workdir=workdirs/demo` is relative."""
  monkeypatch.chdir(tmp_path)
  manager = checkpointing.create_manager('workdirs/run', keep=1)
  try:
    checkpointing.save(manager, parallel.replicate(template.replace(step=np.int32(2))), config)
    manager.wait_until_finished()
    restored = checkpointing.restore(manager, template)
  finally:
    manager.close()
  assert complete_steps(tmp_path / 'workdirs' / 'run') == [2]
  assert int(restored.step[0]) == 2


@pytest.mark.parametrize('tmp_name', ['9.orbax-checkpoint-tmp', '9.orbax-checkpoint-tmp-123'])
def test_a_save_cut_short_does_not_stop_restore_or_saving(tmp_path, saved, config, template,
                                                           trained, tmp_name):
  """A crash mid-save leaves a temporary directory for a step after the latest complete one;
  restore takes the complete one, and that step can be saved again later."""
  workdir = tmp_path / 'workdir'
  shutil.copytree(saved, workdir)
  leftover = workdir / 'checkpoints' / tmp_name / 'state'
  leftover.mkdir(parents=True)
  (leftover / 'manifest.ocdbt').write_bytes(b'\0' * 10)
  manager = checkpointing.create_manager(workdir, keep=3)
  try:
    assert manager.latest_step() == 7
    assert_trees_equal(trained, checkpointing.restore(manager, template))
    later = trained.replace(step=parallel.replicate(np.int32(9)))
    assert checkpointing.save(manager, later, config) == 9
    manager.wait_until_finished()
    assert manager.all_steps() == [7, 9]
    assert_trees_equal(later, checkpointing.restore(manager, template))
  finally:
    manager.close()
  assert complete_steps(workdir) == [7, 9]
