"""Running trained generators outside the train step: eval mode, single device, jitted."""

from collections.abc import Callable
from typing import Any

import jax

from cyclegan_jax.train_state import Models


def apply_generator(models: Models, name: str, params: dict[str, Any],
                    batch_stats: dict[str, Any], images: jax.Array) -> jax.Array:
  """G_AB or G_BA in eval mode: no dropout, batch norm from its running averages."""
  variables = {'params': params[name]}
  if batch_stats.get(name):
    variables['batch_stats'] = batch_stats[name]
  return models.generators[name].apply(variables, images, train=False)


def make_cycle_fn(models: Models) -> Callable[..., dict[str, jax.Array]]:
  """Returns jitted (params, batch_stats, real_a, real_b) → every image of both cycles."""

  @jax.jit
  def cycle(params, batch_stats, real_a, real_b):
    g = lambda name, x: apply_generator(models, name, params, batch_stats, x)
    fake_b, fake_a = g('g_ab', real_a), g('g_ba', real_b)
    return {'real_a': real_a, 'fake_b': fake_b, 'rec_a': g('g_ba', fake_b),
            'real_b': real_b, 'fake_a': fake_a, 'rec_b': g('g_ab', fake_a)}

  return cycle
