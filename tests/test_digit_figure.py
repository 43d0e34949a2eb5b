"""The digit run's picture: which digits it shows and how it marks the misread ones."""

import numpy as np

from cyclegan_jax import digit_figure

H = W = 4
PAD = 2  # visualize.image_grid's padding.


def _constant_images(values):
  return np.stack([np.full((H, W, 3), v, np.float32) for v in values])


def _tile(grid, row, col):
  top, left = PAD + row * (H + PAD), PAD + col * (W + PAD)
  return grid[top:top + H, left:left + W]


def test_lightest_orders_by_mean_brightness_with_ties_by_index():
  images = _constant_images([0.1, 0.5, -0.2, 0.5, 0.9])
  assert digit_figure.lightest(images, 3).tolist() == [4, 1, 3]
  images[2, 0, 0] = 100.0  # One bright pixel lifts the mean of image 2 above all others.
  assert digit_figure.lightest(images, 1).tolist() == [2]


def test_figure_shows_first_lightest_and_misread_digits_and_frames_the_misread_ones():
  # Source image i is the constant (i − 10) / 10: the lightest two are 11 and 10.
  values = [(i - 10) / 10 for i in range(12)]
  source, labels = _constant_images(values), np.arange(12) % 10
  mnist = _constant_images([-1.0, -0.5, 0.0, 0.5, 1.0, 1.0, 1.0])
  misread = {1, 5, 11}  # The classifier gets these source digits wrong.

  def predict(translated):
    index = np.rint(-translated[:, 1, 1, 0] * 10 + 10).astype(int)  # to_mnist negates.
    return np.array([(labels[i] + 1) % 10 if i in misread else labels[i] for i in index])

  grid = digit_figure.figure(source, labels, mnist, to_mnist=lambda x: -x,
                             from_mnist=lambda x: x / 2, predict=predict, columns=2)
  shown = [0, 1, 11, 10, 1, 5]  # First two, lightest two, first two misread.
  assert grid.shape == (PAD + 4 * (H + PAD), PAD + len(shown) * (W + PAD), 3)
  for col, i in enumerate(shown):
    expected = np.uint8(round((values[i] + 1) * 127.5))
    assert (_tile(grid, 0, col) == expected).all(), (col, i)
    translation = _tile(grid, 1, col)
    inner = np.uint8(round((1 - values[i]) * 127.5))
    assert (translation[1:-1, 1:-1] == inner).all()
    border = translation[0, 0].tolist()
    assert border == ([255, 0, 0] if i in misread else [inner] * 3), (col, i, border)
  assert [_tile(grid, 2, c)[0, 0, 0] for c in range(4)] == [0, 64, 128, 191]
  assert [_tile(grid, 3, c)[0, 0, 0] for c in range(4)] == [64, 96, 128, 159]


def test_figure_with_no_misread_digit_has_two_groups():
  source, labels = _constant_images([0.0, 0.1, 0.2]), np.array([3, 4, 5])
  grid = digit_figure.figure(source, labels, source, to_mnist=lambda x: x, from_mnist=lambda x: x,
                             predict=lambda x: labels[:len(x)], columns=1)
  assert grid.shape[1] == PAD + 2 * (W + PAD)  # The first digit and the lightest, no misread.
