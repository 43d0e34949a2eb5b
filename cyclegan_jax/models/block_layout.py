"""ResnetGenerator's residual blocks in two parameter layouts, converted both ways.

The generator scans its blocks (one compiled body), so their variables are one subtree with a
leading block axis: {BLOCKS: {'block': <one ResnetBlock's tree>}}. Checkpoints written before
the scan, and the reference's state dicts, hold one subtree per block, ResnetBlock_0 …
ResnetBlock_{n-1}. Pure functions on nested dicts of arrays, at any depth, so one call converts
a whole train state (parameters, batch stats and the optimizer's moments).
"""

import re
from typing import Any

import jax
import numpy as np

BLOCKS = 'ResnetBlocks'
_PER_BLOCK = re.compile(r'ResnetBlock_\d+')


def stack_blocks(tree: Any) -> Any:
  """`tree` with each dict's ResnetBlock_0 … ResnetBlock_{n-1} stacked into one BLOCKS entry
  (host numpy arrays)."""
  if not isinstance(tree, dict):
    return tree
  count = sum(1 for key in tree if _PER_BLOCK.fullmatch(key))
  out = {k: stack_blocks(v) for k, v in tree.items() if not _PER_BLOCK.fullmatch(k)}
  if count:
    blocks = [stack_blocks(tree[f'ResnetBlock_{i}']) for i in range(count)]
    out[BLOCKS] = {'block': jax.tree.map(lambda *xs: np.stack(xs), *blocks)}
  return out


def unstack_blocks(tree: Any) -> Any:
  """The inverse of `stack_blocks`: each BLOCKS entry as ResnetBlock_0 … ResnetBlock_{n-1}."""
  if not isinstance(tree, dict):
    return tree
  out = {k: unstack_blocks(v) for k, v in tree.items() if k != BLOCKS}
  if BLOCKS in tree:
    stacked = tree[BLOCKS]['block']
    for i in range(len(jax.tree.leaves(stacked)[0])):
      out[f'ResnetBlock_{i}'] = jax.tree.map(lambda x, i=i: x[i], stacked)
  return out
