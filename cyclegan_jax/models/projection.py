"""CUT's projection head F (its `PatchSampleF` with `mlp_sample`): one small MLP per NCE layer
that maps sampled feature patches into the space where PatchNCE compares them."""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cyclegan_jax.models import layers


def l2_normalize(x: jax.Array, eps: float = 1e-7) -> jax.Array:
  """x / (‖x‖₂ + eps) over the last axis, as the reference's `Normalize(2)`."""
  return x / (jnp.sqrt(jnp.sum(jnp.square(x), -1, keepdims=True)) + eps)


class PatchProjection(nn.Module):
  """Per layer: Dense(features), ReLU, Dense(features), then L2 normalisation.

  Its parameter shapes follow the channels of the patches it is first given, so they are
  derived from the generator (`families.cut` initialises it on the generator's feature shapes,
  never on data).
  """
  features: int = 256
  init_type: str = 'xavier'
  init_gain: float = 0.02

  @nn.compact
  def __call__(self, patches: Sequence[jax.Array], train: bool = True) -> list[jax.Array]:
    """patches: per layer [..., C_l] → per layer [..., features], unit length. `train` is the
    flag every network takes; F behaves the same either way."""
    del train
    init = layers.kernel_init(self.init_type, self.init_gain)
    projected = []
    for x in patches:
      hidden = nn.Dense(self.features, kernel_init=init, bias_init=nn.initializers.zeros)(x)
      out = nn.Dense(self.features, kernel_init=init, bias_init=nn.initializers.zeros)(
          nn.relu(hidden))
      projected.append(l2_normalize(out))
    return projected
