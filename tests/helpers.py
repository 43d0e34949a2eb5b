"""Small helpers shared by several test files."""

import csv
import pathlib

import jax
import numpy as np
import orbax.checkpoint as ocp


def host_tree(tree):
  """numpy copies of every leaf (typed PRNG keys as their raw key data), for exact comparisons."""

  def one(x):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      x = jax.random.key_data(x)
    return np.asarray(x)

  return jax.tree.map(one, tree)


def complete_steps(workdir) -> list[int]:
  """Steps whose checkpoint finished: orbax renames `N.orbax-checkpoint-tmp` to `N` last."""
  path = pathlib.Path(workdir) / 'checkpoints'
  return sorted(int(p.name) for p in path.iterdir() if p.name.isdigit()) if path.exists() else []


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
