"""The `cpu` and `patches` conv implementations give XLA's results: outputs, input and kernel
gradients, on every conv shape the models use, whole models with the same parameter trees, and
(`patches`) the second derivatives of the R1 penalty."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import default, test as test_config
from cyclegan_jax import losses
from cyclegan_jax.benchmarks import layers as benchmark_layers
from cyclegan_jax.models import convolution, discriminators, generators, kernel_grad

F32_TOL = 1e-5  # Max-abs difference for O(1) values (the issue's bar for float32).
BF16_RTOL = 2e-2  # bfloat16 keeps 8 bits of mantissa: both impls round every conv output.


def _model_config(**overrides) -> ml_collections.ConfigDict:
  config = default.get_config().model
  config.update(ngf=8, ndf=8, **overrides)
  return config


def _all_conv_shapes() -> list[dict]:
  """Distinct convs of every generator and discriminator at sizes where both gradient paths
  occur (output sides from 2 to 64)."""
  shapes, seen = [], set()
  for generator, discriminator, size in (('resnet_9blocks', 'basic', 64),
                                         ('unet_128', 'pixel', 128),
                                         ('resnet_6blocks', 'conv4', 32)):
    config = ml_collections.ConfigDict({'model': _model_config(
        generator=generator, discriminator=discriminator)})
    for spec in benchmark_layers.conv_shapes(config, size):
      key = str({k: v for k, v in spec.items() if k not in ('layer', 'uses')})
      if key not in seen:
        seen.add(key)
        shapes.append(spec)
  return shapes


SHAPES = _all_conv_shapes()


def _inputs(spec, dtype=jnp.float32):
  """x in [-1, 1], kernel ~ N(0, 1/fan_in) and dy scaled so outputs and gradients are O(1).
  Drawn with numpy: eager jax.random compiles anew for every shape (a minute over SHAPES)."""
  rng = np.random.default_rng(0)
  x = rng.uniform(-1.0, 1.0, spec['input'])
  kh, kw, cin, _ = spec['kernel']
  w = rng.normal(size=spec['kernel']) / np.sqrt(kh * kw * cin)
  y = jax.eval_shape(benchmark_layers._layer_fn(spec, 'xla'), x.astype(np.float32),
                     w.astype(np.float32))
  dy = rng.normal(size=y.shape) / np.sqrt(np.prod(y.shape[1:3]))
  return tuple(jnp.asarray(a, dtype) for a in (x, w, dy))


def _value_and_grads(spec, impl, x, w, dy):
  fn = benchmark_layers._layer_fn(spec, impl)
  return jax.jit(functools.partial(benchmark_layers._output_and_grads, fn))(x, w, dy)


def test_shapes_cover_what_the_issue_names():
  kinds = {(s['kernel'][0], s['stride'], s.get('pad_mode'), s['transpose']) for s in SHAPES}
  assert (7, 1, 'zeros', False) in kinds  # ResNet's first and last convs (reflect pad before).
  assert (3, 1, 'reflect', False) in kinds  # Residual blocks.
  assert (3, 2, 'zeros', False) in kinds  # ResNet downsampling.
  assert (3, 2, None, True) in kinds and (4, 2, None, True) in kinds  # Transposed convs.
  assert (4, 2, 'zeros', False) in kinds and (4, 1, 'zeros', False) in kinds  # PatchGAN.
  assert (1, 1, 'zeros', False) in kinds  # PixelGAN.
  assert any(s['kernel'][3] == 1 for s in SHAPES)  # One-logit outputs.
  assert len(SHAPES) > 25


@pytest.mark.parametrize('generator, blocks', [('resnet_9blocks', 9), ('resnet_6blocks', 6)])
def test_uses_count_both_convs_of_every_residual_block(generator, blocks):
  """The layer benchmark multiplies each shape's time by its uses: a scanned block, traced a
  varying number of times, once read 4 for 18."""
  config = ml_collections.ConfigDict({'model': _model_config(generator=generator,
                                                             discriminator='basic')})
  (block,) = [s for s in benchmark_layers.conv_shapes(config, 64)
              if s.get('pad_mode') == 'reflect' and s['kernel'][0] == 3]
  assert block['uses'] == 2 * blocks


def _dcgan_shapes() -> list[dict]:
  """The convs of the DCGAN G and D at 32², where R1 runs `patches`, and one of each kind of
  the other models' (7×7 reflect, 3×3 stride 2, 1×1)."""
  config = ml_collections.ConfigDict({'model': _model_config(
      generator='dcgan', discriminator='dcgan', norm='batch', image_size=32)})
  kinds = {}
  for spec in SHAPES:
    kind = (spec['kernel'][0], spec['stride'])
    if kind in ((7, 1), (3, 2), (1, 1)):
      kinds.setdefault(kind, spec)
  return benchmark_layers.conv_shapes(config, 32) + list(kinds.values())


@pytest.mark.parametrize('impl, matmul_grads_from', [
    ('cpu', convolution._MIN_MATMUL_GRAD_PIXELS), ('cpu', 0), ('patches', 0)],
    ids=['cpu_default_paths', 'cpu_matmul_grads_on_small_shapes', 'patches'])
@pytest.mark.slow
def test_impl_matches_xla_on_every_conv_shape(impl, matmul_grads_from, monkeypatch):
  if impl == 'patches':
    shapes = _dcgan_shapes()
  elif matmul_grads_from:
    shapes = SHAPES
  else:  # The shapes whose kernel gradients the default paths leave to XLA.
    shapes = [s for s in SHAPES if not _takes_matmul_grads(s)]
  monkeypatch.setattr(convolution, '_MIN_MATMUL_GRAD_PIXELS', matmul_grads_from)
  for spec in shapes:
    x, w, dy = _inputs(spec)
    expected = _value_and_grads(spec, 'xla', x, w, dy)
    got = _value_and_grads(spec, impl, x, w, dy)
    for name, a, b in zip(('output', 'input grad', 'kernel grad'), got, expected):
      assert a.shape == b.shape, (spec, name)
      np.testing.assert_allclose(a, b, rtol=0, atol=F32_TOL, err_msg=f'{name} of {spec}')


def _takes_matmul_grads(spec) -> bool:
  """Whether the default `cpu` impl computes this conv's kernel gradient as matmuls."""
  output = jax.eval_shape(benchmark_layers._layer_fn(spec, 'xla'), *_inputs(spec)[:2])
  return convolution._matmul_grads_pay(output.shape, in_loop_body=False)


def test_both_gradient_paths_are_taken():
  big = [s for s in SHAPES if _takes_matmul_grads(s)]
  assert 0 < len(big) < len(SHAPES)


@pytest.mark.parametrize('dy_shape, in_loop_body, matmuls', [
    ((1, 48, 48, 3), False, True), ((1, 44, 44, 256), False, False),
    ((1, 32, 32, 512), False, True), ((1, 15, 15, 512), False, False),
    ((1, 14, 14, 1), False, True), ((1, 8, 8, 64), True, True)])
def test_kernel_gradients_take_matmuls_for_enough_pixels_or_output_values(
    dy_shape, in_loop_body, matmuls):
  """48² output pixels, or 32² of 512 features (the 128² generator's first transposed conv:
  0.69–0.76× XLA's time that way), a single-feature output, or any conv in a rolled loop's
  body."""
  assert convolution._matmul_grads_pay(dy_shape, in_loop_body) == matmuls


@pytest.mark.parametrize('kh, kw, width, out_h', [(7, 7, 20, 14), (4, 4, 9, 6), (3, 3, 5, 3),
                                                  (1, 4, 8, 8)])
def test_tap_shifted_matrices_hold_every_tap_exactly(kh, kw, width, out_h):
  """The kernel gradients' matrices, built in two rounds of moves, equal the kh·kw taps' own
  slices (patches of x) and zero-padded shifts (of dy) side by side, bit for bit."""
  rng = np.random.default_rng(0)
  length = out_h * width
  flat = rng.normal(size=(2, (out_h + kh - 1) * width + kw - 1, 3)).astype(np.float32)
  dy = rng.normal(size=(2, length, 3)).astype(np.float32)
  offsets = [i * width + j for i in range(kh) for j in range(kw)]
  patches = np.concatenate([flat[:, o:o + length] for o in offsets], axis=-1)
  shifts = np.concatenate([np.pad(dy, ((0, 0), (o, flat.shape[1] - length - o), (0, 0)))
                           for o in offsets], axis=-1)
  np.testing.assert_array_equal(kernel_grad.shifted(flat, kh, kw, width, length, -1), patches)
  np.testing.assert_array_equal(
      kernel_grad.shifted(dy, kh, kw, width, flat.shape[1], 1), shifts)


def test_in_a_loop_body_every_kernel_gradient_takes_the_matmul_form():
  """XLA:CPU runs its own conv gradients as naive loops in the body of a rolled loop, so convs
  traced in `loop_body` take rule 2 at any size, with the same gradients."""
  x, w, dy = (np.random.default_rng(0).normal(size=s).astype(np.float32)
              for s in ((2, 8, 8, 16), (3, 3, 16, 16), (2, 8, 8, 16)))

  def grads(rolled):
    def loss(x, w):
      with convolution.loop_body(rolled):
        return jnp.sum(convolution.cpu_conv(x, w, (1, 1), ((1, 1), (1, 1))) * dy)
    return jax.grad(loss, (0, 1)), str(jax.make_jaxpr(jax.grad(loss, (0, 1)))(x, w))

  (plain, plain_jaxpr), (in_loop, loop_jaxpr) = grads(False), grads(True)
  # In the loop: the forward conv and the input gradient's; the kernel gradient is matmuls.
  assert loop_jaxpr.count('conv_general_dilated') == 2
  assert plain_jaxpr.count('conv_general_dilated') > 2
  assert 'dot_general' in loop_jaxpr and 'dot_general' not in plain_jaxpr
  for a, b in zip(in_loop(x, w), plain(x, w)):  # Sums of 128 products of unit normals.
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_bfloat16_agrees_within_its_precision():
  for spec in SHAPES[:8]:
    inputs = _inputs(spec, jnp.bfloat16)
    expected = _value_and_grads(spec, 'xla', *inputs)
    got = _value_and_grads(spec, 'cpu', *inputs)
    for a, b in zip(got, expected):
      assert a.dtype == b.dtype == jnp.bfloat16
      a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
      np.testing.assert_allclose(a, b, rtol=0, atol=BF16_RTOL * max(1.0, np.abs(b).max()))


@pytest.mark.parametrize('generator,discriminator,size', [
    ('resnet_6blocks', 'basic', 64), ('unet_128', 'pixel', 128), ('dcgan', 'dcgan', 32)])
@pytest.mark.slow
def test_models_match_across_impls(generator, discriminator, size):
  """Same parameter trees (so imported weights fit both), same outputs and gradients."""
  results = {}
  config = _model_config(generator=generator, discriminator=discriminator, image_size=size)
  g, d = generators.create_generator(config), discriminators.create_discriminator(config)
  g_in = (jnp.ones((2, config.nz)) if generator == 'dcgan'
          else jax.random.uniform(jax.random.key(1), (2, size, size, 3), minval=-1))

  def init():
    g_vars = g.init(jax.random.key(2), g_in)
    return g_vars, d.init(jax.random.key(3), g.apply(g_vars, g_in))

  g_vars, d_vars = jax.jit(init)()
  for impl in ('xla', 'cpu'):

    def loss(g_params, d_params):
      fake = g.apply({**g_vars, 'params': g_params}, g_in)
      return jnp.mean(d.apply({**d_vars, 'params': d_params}, fake) ** 2), fake

    with convolution.using(impl):  # Traced (and so computed) with `impl`.
      shapes = jax.tree.map(jnp.shape, jax.eval_shape(lambda: init()))  # A trace of its own.
      (value, fake), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(
          g_vars['params'], d_vars['params'])
    results[impl] = (shapes, value, fake, grads)
  assert results['xla'][0] == results['cpu'][0]
  np.testing.assert_allclose(results['cpu'][1], results['xla'][1], rtol=1e-5)
  np.testing.assert_allclose(results['cpu'][2], results['xla'][2], atol=F32_TOL)
  for a, b in zip(jax.tree.leaves(results['cpu'][3]), jax.tree.leaves(results['xla'][3])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_auto_is_winograd_on_the_cpu_backend_and_unknown_impls_are_named():
  assert convolution.resolve_impl('auto') == 'winograd'
  assert convolution.current_impl() == 'winograd'  # The process default is auto.
  assert 'conv_impl' not in test_config.get_config().model  # A machine setting, not a model's.
  with pytest.raises(ValueError,
                     match="unknown conv_impl 'fast'; expected one of auto, xla, cpu, winograd"):
    convolution.set_impl('fast')
  with pytest.raises(ValueError, match="unknown conv_impl 'fast'"):
    with convolution.using('fast'):
      pass


def test_every_command_offers_the_impls_and_says_what_auto_picks():
  from absl import flags
  # main defines its flags at import, listing the impls itself so as not to import jax then.
  from cyclegan_jax import main  # noqa: F401
  assert flags.FLAGS['conv_impl'].parser.enum_values == list(convolution.IMPLS)
  auto = convolution.resolve_impl('auto')  # This backend's (CPU).
  assert f'auto picks {auto} on the CPU backend' in flags.FLAGS['conv_impl'].help
  assert f'auto: {auto} on the CPU backend' in convolution.IMPL_HELP  # The benchmarks' help.


def test_the_process_impl_is_overridden_inside_using_blocks_only():
  try:
    convolution.set_impl('xla')
    assert convolution.current_impl() == 'xla'
    with convolution.using('patches'):
      assert convolution.current_impl() == 'patches'
      with convolution.using('auto'):
        assert convolution.current_impl() == 'winograd'
      assert convolution.current_impl() == 'patches'
    assert convolution.current_impl() == 'xla'
  finally:
    convolution.set_impl('auto')
  assert convolution.current_impl() == 'winograd'


def test_cpu_impl_refuses_what_it_does_not_compute():
  x, w = jnp.ones((1, 8, 8, 4)), jnp.ones((3, 3, 2, 4))
  conv = functools.partial(convolution.conv_general_dilated, x, w, (1, 1), ((1, 1), (1, 1)),
                           dimension_numbers=('NHWC', 'HWIO', 'NHWC'), impl='cpu')
  with pytest.raises(ValueError, match='does not support feature groups'):
    conv(feature_group_count=2)
  with pytest.raises(ValueError, match='does not support dilation'):
    conv(rhs_dilation=(2, 2))


def test_patches_impl_gives_xlas_r1_gradient_through_the_dcgan_discriminator():
  """The R1 penalty differentiates D twice (input, then parameters): `patches`, which
  `for_second_derivatives` picks on CPU, gives XLA's value and parameter gradient."""
  config = _model_config(discriminator='dcgan', norm='batch')
  config.ndf, config.image_size = 4, 16
  x = jax.random.uniform(jax.random.key(1), (4, 16, 16, 3), minval=-1.0, maxval=1.0)
  d = discriminators.create_discriminator(config)
  variables = d.init(jax.random.key(0), x, train=False)

  def penalty(params):
    def logits(images):
      return d.apply({**variables, 'params': params}, images, train=True,
                     mutable=['batch_stats'])[0]
    return losses.r1_penalty(logits, x, gamma=1.0)

  results = {}
  for impl in ('xla', 'patches'):
    with convolution.using(impl):
      results[impl] = jax.jit(jax.value_and_grad(penalty))(variables['params'])
  assert float(results['patches'][0]) == pytest.approx(float(results['xla'][0]), rel=1e-5)
  for a, b in zip(jax.tree.leaves(results['patches'][1]), jax.tree.leaves(results['xla'][1])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  assert convolution.for_second_derivatives() == 'patches'  # Tests run on the CPU backend.
  with convolution.using('xla'):
    assert convolution.for_second_derivatives() == 'patches'
