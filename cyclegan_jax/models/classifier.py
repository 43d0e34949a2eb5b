"""The digit classifier behind the digit metrics: a small CNN on images in [-1, 1]."""

import flax.linen as nn
import jax


class Classifier(nn.Module):
  """10 logits per image in [-1, 1]: 2×2 space-to-depth, conv3×3-ReLU-maxpool stages, a hidden
  dense layer. The space-to-depth stem spares CPUs a full-resolution conv with 3 input channels,
  which runs far from peak."""
  features: tuple[int, ...] = (32, 64, 128)
  dense: int = 128

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    n, h, w, c = x.shape
    x = x.reshape(n, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
    x = x.reshape(n, h // 2, w // 2, 4 * c)
    for width in self.features:
      x = nn.max_pool(nn.relu(nn.Conv(width, (3, 3))(x)), (2, 2), (2, 2))
    x = nn.relu(nn.Dense(self.dense)(x.reshape(x.shape[0], -1)))
    return nn.Dense(10)(x)


def create_classifier(classifier_config) -> Classifier:
  """The classifier `config.digit_classifier` describes."""
  return Classifier(tuple(classifier_config.features), classifier_config.dense)
