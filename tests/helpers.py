"""Small helpers shared by several test files."""

import jax
import numpy as np


def host_tree(tree):
  """numpy copies of every leaf (typed PRNG keys as their raw key data), for exact comparisons."""

  def one(x):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      x = jax.random.key_data(x)
    return np.asarray(x)

  return jax.tree.map(one, tree)
