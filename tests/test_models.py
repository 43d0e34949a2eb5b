"""Generators, discriminators and the layers they share: sizes, shapes and every option."""

import math

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from cyclegan_jax.models import block_layout, discriminators, generators, layers

# Threefry keys make XLA:CPU compile every initialiser slowly (seconds per model); the tests
# use the 'rbg' implementation, and numpy-drawn variables where the initialiser is not the point.
KEY = jax.random.key(0, impl='rbg')
GENERATOR_NAMES = ('resnet_9blocks', 'resnet_6blocks', 'unet_256', 'unet_128')


def model_config(**overrides):
  """The default `config.model` with some keys replaced."""
  cfg = default.get_config().model
  for key, value in overrides.items():
    setattr(cfg, key, value)
  return cfg


def abstract_init(model, *shape):
  return jax.eval_shape(model.init, KEY, jax.ShapeDtypeStruct(shape, jnp.float32))


def abstract_output(model, *shape):
  variables = abstract_init(model, *shape)
  return jax.eval_shape(model.apply, variables, jax.ShapeDtypeStruct(shape, jnp.float32))


def numpy_variables(model, x, seed=0):
  """Variables shaped as `model.init` makes them, drawn in numpy like the reference init:
  kernels N(0, 0.02), biases 0, batch-norm scales N(1, 0.02) and running stats (0, 1)."""
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = path[-1].key
    if name == 'kernel':
      value = rng.normal(0.0, 0.02, leaf.shape)
    elif name == 'scale':
      value = rng.normal(1.0, 0.02, leaf.shape)
    else:
      value = np.ones(leaf.shape) if name == 'var' else np.zeros(leaf.shape)
    return jnp.asarray(value, leaf.dtype)

  return jax.tree_util.tree_map_with_path(draw, jax.eval_shape(model.init, KEY, x))


def run_train_mode(model, x, rngs=None):
  """A training-mode forward pass on numpy-drawn variables; returns (variables, output)."""
  variables = numpy_variables(model, x)
  apply = jax.jit(lambda v, x: model.apply(v, x, rngs=rngs, mutable=['batch_stats']))
  out, _ = apply(variables, x)
  return variables, out


def random_images(*shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).uniform(-1.0, 1.0, shape), jnp.float32)


# ----------------------------------------------------------------------------------------------
# Parameter counts of the reference networks.


@pytest.mark.parametrize('name, size, expected', [
    ('resnet_9blocks', 256, 11_378_179),
    ('resnet_6blocks', 128, 7_837_699),
    ('unet_256', 256, 54_409_603),  # test_torch_equivalence checks these two against torch.
    ('unet_128', 128, 41_825_667),
])
def test_generator_param_counts(name, size, expected):
  model = generators.create_generator(model_config(generator=name))
  assert layers.count_params(abstract_init(model, 1, size, size, 3)['params']) == expected


@pytest.mark.parametrize('name, size, expected', [
    ('resnet_9blocks', 256, 11_378_179), ('resnet_6blocks', 128, 7_837_699)])
def test_antialiased_resnets_keep_the_reference_param_counts(name, size, expected):
  """The blurs have no parameters and each replaced conv keeps its kernel shape."""
  model = generators.create_generator(model_config(generator=name, antialias=True))
  variables = abstract_init(model, 1, size, size, 3)
  assert layers.count_params(variables['params']) == expected
  plain = abstract_init(generators.create_generator(model_config(generator=name)), 1, size, size, 3)
  shapes = lambda tree: sorted(x.shape for x in jax.tree.leaves(tree))
  assert shapes(variables) == shapes(plain)  # Each transposed conv's kernel, now a conv's.


def test_antialiased_resnet_keeps_the_image_size():
  model = generators.create_generator(model_config(generator='resnet_2blocks', ngf=8,
                                                   antialias=True))
  y, _ = jax.jit(model.init_with_output)(KEY, random_images(1, 36, 28, 3))
  assert y.shape == (1, 36, 28, 3) and float(jnp.abs(y).max()) <= 1 and float(y.std()) > 0


def test_blur_downsample_on_a_ramp():
  """Along W, [0, 4, 8, 12] reflect-padded is [4, 0, 4, 8, 12, 8]; [1, 2, 1] / 4 at stride 2
  gives (4 + 0 + 4) / 4 = 2 and (4 + 16 + 12) / 4 = 8. Along H the image is constant."""
  x = jnp.tile(jnp.array([0.0, 4.0, 8.0, 12.0])[None, None, :, None], (1, 4, 1, 2))
  np.testing.assert_allclose(layers.blur_downsample(x),
                             np.tile(np.array([2.0, 8.0])[None, None, :, None], (1, 2, 1, 2)))
  odd = jnp.ones((1, 5, 7, 3))  # Odd sides halve up: 5 → 3, 7 → 4; a constant stays.
  np.testing.assert_allclose(layers.blur_downsample(odd), np.ones((1, 3, 4, 3)))


def test_blur_upsample_on_a_ramp():
  """Along W, [0, 4] becomes [(0 + 0) / 4, (0 + 4) / 4, (0 + 12) / 4, (12 + 4) / 4] =
  [0, 1, 3, 4] (edges repeated); along H the constant rows stay constant."""
  x = jnp.tile(jnp.array([0.0, 4.0])[None, None, :, None], (1, 2, 1, 1))
  np.testing.assert_allclose(layers.blur_upsample(x),
                             np.tile(np.array([0.0, 1.0, 3.0, 4.0])[None, None, :, None],
                                     (1, 4, 1, 1)))


def test_antialias_is_for_resnets_only():
  for name in ('unet_128', 'dcgan'):
    with pytest.raises(ValueError, match=f"model.antialias is for ResNet generators .*'{name}'"):
      generators.create_generator(model_config(generator=name, antialias=True))


def test_a_style_referenced_resnet_reads_its_reference_beside_the_input():
  """model.style_reference: the first conv reads input and reference channels; no reference is
  a zero one (as translation runs it), and another reference draws another image."""
  model = generators.create_generator(model_config(generator='resnet_2blocks', ngf=8),
                                      reference_nc=3)
  x, reference = random_images(2, 16, 16, 1), random_images(2, 16, 16, 3) + 1.0
  variables = jax.jit(lambda key: model.init(key, x, train=False))(KEY)
  assert variables['params']['Conv_0']['Conv_0']['kernel'].shape == (7, 7, 1 + 3, 8)
  apply = jax.jit(lambda x, **kwargs: model.apply(variables, x, train=False, **kwargs))
  plain = apply(x)
  np.testing.assert_array_equal(plain, apply(x, reference=jnp.zeros((2, 16, 16, 3))))
  assert float(jnp.abs(apply(x, reference=reference) - plain).max()) > 1e-3
  for name in ('unet_128', 'dcgan'):
    with pytest.raises(ValueError,
                       match=f"model.style_reference is for ResNet generators .*'{name}'"):
      generators.create_generator(model_config(generator=name), reference_nc=3)


def test_basic_discriminator_param_count():
  model = discriminators.create_discriminator(model_config())
  assert layers.count_params(abstract_init(model, 1, 256, 256, 3)['params']) == 2_764_737


# ----------------------------------------------------------------------------------------------
# Shapes and output ranges.


@pytest.mark.parametrize('name', GENERATOR_NAMES)
def test_generator_full_size_shape(name):
  model = generators.create_generator(model_config(generator=name))
  out = abstract_output(model, 2, 256, 256, 3)
  assert out.shape == (2, 256, 256, 3)
  assert out.dtype == jnp.float32


@pytest.mark.parametrize('name', GENERATOR_NAMES)
def test_generator_forward_in_tanh_range(name):
  model = generators.create_generator(model_config(generator=name, ngf=8))
  _, out = run_train_mode(model, random_images(1, 256, 256, 3))
  out = np.asarray(out)
  assert out.shape == (1, 256, 256, 3)
  assert np.all(np.isfinite(out))
  assert np.all(np.abs(out) <= 1.0)
  assert out.std() > 1e-4  # A real image, not a constant.


def test_resnet_generator_any_block_count():
  model = generators.create_generator(model_config(generator='resnet_2blocks'))
  params = abstract_init(model, 1, 64, 64, 3)['params']
  assert {x.shape[0] for x in jax.tree.leaves(params[block_layout.BLOCKS])} == {2}  # Stacked.
  assert sorted(k for k in jax.eval_shape(block_layout.unstack_blocks, params)
                if k.startswith('ResnetBlock')) == ['ResnetBlock_0', 'ResnetBlock_1']
  block = 2 * (3 * 3 * 256 * 256 + 256)
  assert layers.count_params(params) == 11_378_179 - 7 * block


@pytest.mark.parametrize('antialias', [False, True])
@pytest.mark.parametrize('halvings, expected_params, multiple', [(1, 13_971, 2), (0, 4_699, 1)])
def test_n_downsampling_sets_the_halvings_and_the_width_of_the_blocks(antialias, halvings,
                                                                       expected_params, multiple):
  """ngf 8, 2 blocks, 3 channels, by hand. One halving: c7s1-8 (1,184), d16 (1,168), blocks of
  16 features (4 × 2,320), u8 (1,160), c7s1-3 (1,179). None: c7s1-8, blocks of 8 (4 × 584),
  c7s1-3. The blocks see (side / 2**halvings)² maps; the image keeps its size."""
  model = generators.create_generator(model_config(
      generator='resnet_2blocks', ngf=8, n_downsampling=halvings, antialias=antialias))
  x = random_images(1, 12, 20, 3)
  variables = jax.jit(model.init)(KEY, x)
  assert layers.count_params(variables['params']) == expected_params
  assert (generators.size_multiple(model), generators.min_size(model)) == (multiple, 2 * multiple)
  first_block = 4 + halvings * (4 if antialias else 3)  # Stem, then conv, norm, act (blur).
  apply = jax.jit(model.apply, static_argnames='feature_layers')
  block, = apply(variables, x, feature_layers=(first_block,))
  assert block.shape == (1, 12 // multiple, 20 // multiple, 8 * multiple)
  y = apply(variables, x)
  assert y.shape == x.shape and float(y.std()) > 0


def test_n_downsampling_below_zero_is_refused():
  with pytest.raises(ValueError, match=r'model\.n_downsampling=-1: expected 0 or more\.'):
    generators.create_generator(model_config(generator='resnet_2blocks', n_downsampling=-1))


@pytest.mark.parametrize('rate', [-0.1, 1.5])
def test_dropout_outside_zero_to_one_is_refused(rate):
  """Such rates ran silently: every value kept and scaled by 1 / keep, which is negative above
  rate 1 and below 1 under rate 0."""
  match = rf'model\.dropout={rate}: expected a rate in \[0, 1\]\.'
  with pytest.raises(ValueError, match=match):
    generators.create_generator(model_config(generator='resnet_2blocks', dropout=rate))


@pytest.mark.parametrize('size, expected', [(256, 30), (128, 14), (70, 6)])
def test_basic_discriminator_shapes(size, expected):
  model = discriminators.create_discriminator(model_config())
  assert abstract_output(model, 2, size, size, 3).shape == (2, expected, expected, 1)


def test_discriminator_forward():
  model = discriminators.create_discriminator(model_config(ndf=8))
  _, out = run_train_mode(model, random_images(2, 128, 128, 3))
  assert out.shape == (2, 14, 14, 1) and out.dtype == jnp.float32
  assert np.all(np.isfinite(out)) and float(jnp.std(out)) > 0


def test_other_discriminator_shapes():
  conv4 = discriminators.create_discriminator(model_config(discriminator='conv4', input_nc=1))
  assert abstract_output(conv4, 4, 32, 32, 1).shape == (4, 1, 1, 1)
  assert abstract_output(conv4, 4, 32, 32, 3).shape == (4, 1, 1, 1)
  pixel = discriminators.create_discriminator(model_config(discriminator='pixel'))
  assert abstract_output(pixel, 2, 40, 24, 3).shape == (2, 40, 24, 1)
  n_layers = discriminators.create_discriminator(model_config(discriminator='n_layers',
                                                              n_layers_d=5))
  # 256 -> 128 -> 64 -> 32 -> 16 -> 8 (stride 2), -> 7 -> 6 (stride 1, k4 p1).
  assert abstract_output(n_layers, 1, 256, 256, 3).shape == (1, 6, 6, 1)


def test_conv4_discriminator_forward():
  model = discriminators.create_discriminator(model_config(discriminator='conv4', ndf=8))
  _, out = run_train_mode(model, random_images(3, 32, 32, 1))
  assert out.shape == (3, 1, 1, 1) and np.all(np.isfinite(out))


# ----------------------------------------------------------------------------------------------
# Factories and option validation.


def test_create_generator_rejects_unknown_names():
  for name in ('stylegan', 'resnet_xblocks', 'unet_64'):
    with pytest.raises(ValueError, match='unknown generator') as info:
      generators.create_generator(model_config(generator=name))
    for choice in GENERATOR_NAMES:
      assert choice in str(info.value)


def test_create_discriminator_rejects_unknown_names():
  with pytest.raises(ValueError, match='unknown discriminator') as info:
    discriminators.create_discriminator(model_config(discriminator='stylegan'))
  for choice in ('basic', 'n_layers', 'pixel', 'conv4'):
    assert choice in str(info.value)


@pytest.mark.parametrize('key, value, choices', [
    ('norm', 'group', layers.NORMS),
    ('init_type', 'uniform', layers.INIT_TYPES),
    ('activation', 'gelu', layers.ACTIVATIONS),
])
def test_unknown_options_rejected(key, value, choices):
  model = generators.create_generator(model_config(generator='resnet_1blocks', **{key: value}))
  with pytest.raises(ValueError, match=f'unknown {key}') as info:
    abstract_init(model, 1, 16, 16, 3)
  for choice in choices:
    assert choice in str(info.value)


def test_unknown_pad_mode_rejected():
  conv = layers.Conv(4, 3, padding=1, pad_mode='circular')
  with pytest.raises(ValueError,
                     match="unknown pad_mode 'circular'; expected one of zeros, reflect"):
    jax.eval_shape(conv.init, KEY, jnp.zeros((1, 8, 8, 3)))


# ----------------------------------------------------------------------------------------------
# Norms.


def test_instance_norm_normalises_each_sample_and_channel():
  x = random_images(2, 8, 8, 3) * 5.0 + 3.0
  y = layers.Norm('instance').apply({}, x)
  np.testing.assert_allclose(jnp.mean(y, axis=(1, 2)), 0.0, atol=1e-5)
  np.testing.assert_allclose(jnp.var(y, axis=(1, 2)), 1.0, atol=1e-3)


def test_batch_norm_train_and_eval():
  x = random_images(4, 6, 6, 3) * 2.0 + 1.0
  norm = layers.Norm('batch', gain=0.02)
  variables = norm.init(KEY, x)
  scale = variables['params']['BatchNorm_0']['scale']
  assert not np.allclose(scale, 1.0) and np.allclose(scale, 1.0, atol=0.1)  # N(1, 0.02).
  np.testing.assert_array_equal(variables['params']['BatchNorm_0']['bias'], 0.0)
  y, updates = norm.apply(variables, x, mutable=['batch_stats'])
  np.testing.assert_allclose(jnp.mean(y / scale, axis=(0, 1, 2)), 0.0, atol=1e-5)
  stats = updates['batch_stats']['BatchNorm_0']
  np.testing.assert_allclose(stats['mean'], 0.1 * jnp.mean(x, axis=(0, 1, 2)), rtol=1e-5)
  # Eval mode normalises with the running statistics, not the batch's.
  y_eval = norm.apply({**variables, **updates}, x, train=False)
  expected = ((x - stats['mean']) / jnp.sqrt(stats['var'] + 1e-5)) * scale
  np.testing.assert_allclose(y_eval, expected, rtol=1e-5, atol=1e-5)


def test_no_norm_is_identity():
  x = random_images(2, 4, 4, 3)
  np.testing.assert_array_equal(layers.Norm('none').apply({}, x), x)


@pytest.mark.parametrize('norm', layers.NORMS)
@pytest.mark.parametrize('name', ['resnet_1blocks', 'unet_128'])
def test_every_norm_builds_and_runs_generators(name, norm):
  model = generators.create_generator(model_config(generator=name, ngf=4, norm=norm))
  size = 128 if name == 'unet_128' else 16
  x = random_images(2, size, size, 3)
  variables, out = run_train_mode(model, x)
  assert out.shape == (2, size, size, 3) and np.all(np.isfinite(out))
  assert ('batch_stats' in variables) == (norm == 'batch')
  # A conv feeding batch norm has no bias; the reference keeps it before instance norm.
  assert ('bias' in variables['params']['Conv_1']['Conv_0']) == (norm == 'instance')
  if norm == 'batch':  # Eval mode runs from the running statistics alone.
    out_eval = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
    assert out_eval.shape == x.shape and np.all(np.isfinite(out_eval))


@pytest.mark.parametrize('norm', layers.NORMS)
@pytest.mark.parametrize('name', ['basic', 'pixel', 'conv4'])
def test_every_norm_builds_and_runs_discriminators(name, norm):
  model = discriminators.create_discriminator(model_config(discriminator=name, ndf=4, norm=norm))
  _, out = run_train_mode(model, random_images(2, 32, 32, 3))
  expected = {'basic': (2, 2, 2, 1), 'pixel': (2, 32, 32, 1), 'conv4': (2, 1, 1, 1)}[name]
  assert out.shape == expected and np.all(np.isfinite(out))


# ----------------------------------------------------------------------------------------------
# Initialisers.

BIG_KERNEL = (3, 3, 128, 256)  # fan_in 1152, fan_out 2304.


def _std(init_type, gain):
  return float(jnp.std(layers.kernel_init(init_type, gain)(KEY, BIG_KERNEL)))


def test_normal_init_std_is_gain():
  for gain in (0.02, 0.5):
    assert _std('normal', gain) == pytest.approx(gain, rel=0.01)


def test_xavier_init_std():
  fan_in, fan_out = 9 * 128, 9 * 256
  for gain in (0.02, 1.0):  # torch xavier_normal_: gain * sqrt(2 / (fan_in + fan_out)).
    assert _std('xavier', gain) == pytest.approx(gain * math.sqrt(2 / (fan_in + fan_out)),
                                                 rel=0.01)


def test_kaiming_init_std():
  assert _std('kaiming', 0.02) == pytest.approx(math.sqrt(2 / (9 * 128)), rel=0.01)


def test_orthogonal_init():
  gain = 0.5
  kernel = layers.kernel_init('orthogonal', gain)(KEY, (3, 3, 16, 32))
  matrix = kernel.reshape(-1, 32)  # (fan_in, out): the 32 output filters are orthogonal.
  np.testing.assert_allclose(matrix.T @ matrix, gain**2 * jnp.eye(32), atol=1e-5)


@pytest.mark.parametrize('init_type', layers.INIT_TYPES)
def test_every_init_builds_and_runs(init_type):
  gain = 0.02
  model = generators.create_generator(model_config(generator='resnet_0blocks', ngf=32,
                                                   init_type=init_type, init_gain=gain))
  x = random_images(1, 16, 16, 3)
  variables = jax.jit(model.init)(KEY, x)  # The real initialisers, so not numpy_variables.
  out = jax.jit(model.apply)(variables, x)
  assert np.all(np.isfinite(out)) and float(jnp.std(out)) > 0
  conv = variables['params']['Conv_2']['Conv_0']  # 3x3, 64 -> 128 channels.
  np.testing.assert_array_equal(conv['bias'], 0.0)
  fan_in, fan_out = 9 * 64, 9 * 128
  expected_std = {'normal': gain, 'xavier': gain * math.sqrt(2 / (fan_in + fan_out)),
                  'kaiming': math.sqrt(2 / fan_in),
                  'orthogonal': gain / math.sqrt(fan_in)}[init_type]
  assert float(jnp.std(conv['kernel'])) == pytest.approx(expected_std, rel=0.02)


# ----------------------------------------------------------------------------------------------
# Activations, dropout, dtype.


def test_activation_functions():
  x = jnp.array([-2.0, 0.0, 3.0])
  np.testing.assert_allclose(layers.activation('relu')(x), [0.0, 0.0, 3.0])
  np.testing.assert_allclose(layers.activation('leaky_relu', 0.01)(x), [-0.02, 0.0, 3.0])
  np.testing.assert_allclose(layers.activation('leaky_relu')(x), [-0.4, 0.0, 3.0])


def test_leaky_relu_generator_differs_from_relu():
  x = random_images(1, 16, 16, 3)
  relu = generators.create_generator(model_config(generator='resnet_1blocks', ngf=8))
  leaky = generators.create_generator(model_config(generator='resnet_1blocks', ngf=8,
                                                   activation='leaky_relu', leaky_slope=0.01))
  variables = numpy_variables(relu, x)
  out_relu = jax.jit(relu.apply)(variables, x)
  out_leaky = jax.jit(leaky.apply)(variables, x)  # Same parameters: only the activation differs.
  assert np.all(np.isfinite(out_leaky))
  assert float(jnp.max(jnp.abs(out_relu - out_leaky))) > 1e-6


@pytest.mark.parametrize('name, size', [('resnet_1blocks', 16), ('unet_128', 128)])
def test_dropout(name, size):
  model = generators.create_generator(model_config(generator=name, ngf=4, dropout=0.5))
  x = random_images(1, size, size, 3)
  variables = numpy_variables(model, x)
  train = jax.jit(lambda v, x, k: model.apply(v, x, rngs={'dropout': k}))
  key_1, key_2 = jax.random.key(1, impl='rbg'), jax.random.key(2, impl='rbg')
  out_1 = train(variables, x, key_1)
  out_2 = train(variables, x, key_2)
  assert np.all(np.isfinite(out_1)) and float(jnp.max(jnp.abs(out_1 - out_2))) > 1e-6
  np.testing.assert_array_equal(out_1, train(variables, x, key_1))
  # Eval mode drops nothing: it equals the same network built without dropout.
  no_dropout = generators.create_generator(model_config(generator=name, ngf=4))
  np.testing.assert_allclose(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x),
                             jax.jit(no_dropout.apply)(variables, x), atol=1e-6)
  with pytest.raises(flax.errors.InvalidRngError):  # Training mode needs a 'dropout' rng.
    jax.eval_shape(model.apply, variables, x)


def test_no_dropout_needs_no_rng():
  model = generators.create_generator(model_config(generator='unet_128', ngf=4))
  x = random_images(1, 128, 128, 3)
  variables = numpy_variables(model, x)
  assert np.all(np.isfinite(jax.jit(model.apply)(variables, x)))


def test_bfloat16_compute_keeps_float32_params_and_output():
  x = random_images(1, 16, 16, 3)
  f32 = generators.create_generator(model_config(generator='resnet_1blocks', ngf=8))
  bf16 = generators.create_generator(model_config(generator='resnet_1blocks', ngf=8,
                                                  dtype='bfloat16'))
  variables = numpy_variables(bf16, x)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables))
  out = jax.jit(bf16.apply)(variables, x)
  assert out.dtype == jnp.float32
  assert float(jnp.max(jnp.abs(out - jax.jit(f32.apply)(variables, x)))) < 0.05
