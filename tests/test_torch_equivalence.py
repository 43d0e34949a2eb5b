"""Our layers and models against PyTorch re-statements of the reference CycleGAN code.

The torch modules below restate, layer for layer, the reference networks of
junyanz/pytorch-CycleGAN-and-pix2pix (models/networks.py): ResnetBlock, ResnetGenerator,
NLayerDiscriminator and the recursive UnetSkipConnectionBlock. Weights are copied from torch
into flax parameter trees and both sides run in float32.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cyclegan_jax import discriminators, generators, layers

torch = pytest.importorskip('torch')
tnn = torch.nn

TOL = 1e-5


@pytest.fixture(autouse=True)
def _deterministic_torch():
  torch.manual_seed(0)
  with jax.default_matmul_precision('highest'):
    yield


# ----------------------------------------------------------------------------------------------
# Reference networks in torch (NCHW).

INSTANCE_NORM = functools.partial(tnn.InstanceNorm2d, affine=False, track_running_stats=False)


def _use_bias(norm_layer) -> bool:
  # The reference: conv biases only when the norm is instance norm.
  if isinstance(norm_layer, functools.partial):
    return norm_layer.func == tnn.InstanceNorm2d
  return norm_layer == tnn.InstanceNorm2d


class TorchResnetBlock(tnn.Module):

  def __init__(self, dim, norm_layer=INSTANCE_NORM):
    super().__init__()
    use_bias = _use_bias(norm_layer)
    self.conv_block = tnn.Sequential(
        tnn.ReflectionPad2d(1), tnn.Conv2d(dim, dim, 3, padding=0, bias=use_bias),
        norm_layer(dim), tnn.ReLU(True),
        tnn.ReflectionPad2d(1), tnn.Conv2d(dim, dim, 3, padding=0, bias=use_bias),
        norm_layer(dim))

  def forward(self, x):
    return x + self.conv_block(x)


class TorchResnetGenerator(tnn.Module):

  def __init__(self, input_nc, output_nc, ngf, n_blocks, norm_layer=INSTANCE_NORM):
    super().__init__()
    use_bias = _use_bias(norm_layer)
    model = [tnn.ReflectionPad2d(3), tnn.Conv2d(input_nc, ngf, 7, padding=0, bias=use_bias),
             norm_layer(ngf), tnn.ReLU(True)]
    for i in range(2):
      mult = 2**i
      model += [tnn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1, bias=use_bias),
                norm_layer(ngf * mult * 2), tnn.ReLU(True)]
    model += [TorchResnetBlock(ngf * 4, norm_layer) for _ in range(n_blocks)]
    for i in range(2):
      mult = 2**(2 - i)
      model += [tnn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, stride=2, padding=1,
                                    output_padding=1, bias=use_bias),
                norm_layer(ngf * mult // 2), tnn.ReLU(True)]
    model += [tnn.ReflectionPad2d(3), tnn.Conv2d(ngf, output_nc, 7, padding=0), tnn.Tanh()]
    self.model = tnn.Sequential(*model)

  def forward(self, x):
    return self.model(x)


class TorchNLayerDiscriminator(tnn.Module):

  def __init__(self, input_nc, ndf=64, n_layers=3, norm_layer=INSTANCE_NORM):
    super().__init__()
    use_bias = _use_bias(norm_layer)
    seq = [tnn.Conv2d(input_nc, ndf, 4, stride=2, padding=1), tnn.LeakyReLU(0.2, True)]
    nf_mult = 1
    for n in range(1, n_layers):
      nf_prev, nf_mult = nf_mult, min(2**n, 8)
      seq += [tnn.Conv2d(ndf * nf_prev, ndf * nf_mult, 4, stride=2, padding=1, bias=use_bias),
              norm_layer(ndf * nf_mult), tnn.LeakyReLU(0.2, True)]
    nf_prev, nf_mult = nf_mult, min(2**n_layers, 8)
    seq += [tnn.Conv2d(ndf * nf_prev, ndf * nf_mult, 4, stride=1, padding=1, bias=use_bias),
            norm_layer(ndf * nf_mult), tnn.LeakyReLU(0.2, True),
            tnn.Conv2d(ndf * nf_mult, 1, 4, stride=1, padding=1)]
    self.model = tnn.Sequential(*seq)

  def forward(self, x):
    return self.model(x)


class TorchUnetSkipConnectionBlock(tnn.Module):
  """As the reference, including its in-place LeakyReLU: the skip concatenates LReLU(x)."""

  def __init__(self, outer_nc, inner_nc, input_nc=None, submodule=None, outermost=False,
               innermost=False, norm_layer=INSTANCE_NORM, use_dropout=False):
    super().__init__()
    self.outermost = outermost
    use_bias = _use_bias(norm_layer)
    input_nc = outer_nc if input_nc is None else input_nc
    downconv = tnn.Conv2d(input_nc, inner_nc, 4, stride=2, padding=1, bias=use_bias)
    downrelu, downnorm = tnn.LeakyReLU(0.2, True), norm_layer(inner_nc)
    uprelu, upnorm = tnn.ReLU(True), norm_layer(outer_nc)
    if outermost:
      upconv = tnn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, stride=2, padding=1)
      model = [downconv, submodule, uprelu, upconv, tnn.Tanh()]
    elif innermost:
      upconv = tnn.ConvTranspose2d(inner_nc, outer_nc, 4, stride=2, padding=1, bias=use_bias)
      model = [downrelu, downconv, uprelu, upconv, upnorm]
    else:
      upconv = tnn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, stride=2, padding=1,
                                   bias=use_bias)
      model = [downrelu, downconv, downnorm, submodule, uprelu, upconv, upnorm]
      if use_dropout:
        model += [tnn.Dropout(0.5)]
    self.model = tnn.Sequential(*model)

  def forward(self, x):
    if self.outermost:
      return self.model(x)
    return torch.cat([x, self.model(x)], 1)


def torch_unet(input_nc, output_nc, num_downs, ngf=64, norm_layer=INSTANCE_NORM):
  block = functools.partial(TorchUnetSkipConnectionBlock, norm_layer=norm_layer)
  unet = block(ngf * 8, ngf * 8, innermost=True)
  for _ in range(num_downs - 5):
    unet = block(ngf * 8, ngf * 8, submodule=unet)
  unet = block(ngf * 4, ngf * 8, submodule=unet)
  unet = block(ngf * 2, ngf * 4, submodule=unet)
  unet = block(ngf, ngf * 2, submodule=unet)
  return block(output_nc, ngf, input_nc=input_nc, submodule=unet, outermost=True)


# ----------------------------------------------------------------------------------------------
# Weight copying and layout helpers.


def to_torch(x) -> 'torch.Tensor':
  return torch.from_numpy(np.ascontiguousarray(np.transpose(np.asarray(x), (0, 3, 1, 2))))


def from_torch(t) -> np.ndarray:
  return np.transpose(t.detach().numpy(), (0, 2, 3, 1))


def torch_kernel_to_flax(module) -> np.ndarray:
  """Conv2d (O, I, kH, kW) -> HWIO; ConvTranspose2d (I, O, kH, kW) -> flipped HWIO."""
  w = module.weight.detach().numpy()
  if isinstance(module, tnn.ConvTranspose2d):
    return np.flip(w.transpose(2, 3, 0, 1), axis=(0, 1))
  return w.transpose(2, 3, 1, 0)


def torch_conv_params(module) -> dict:
  """One of our `layers.Conv` (wraps a flax Conv) or `layers.ConvTranspose` (owns its kernel)."""
  leaves = {'kernel': jnp.asarray(torch_kernel_to_flax(module).copy())}
  if module.bias is not None:
    leaves['bias'] = jnp.asarray(module.bias.detach().numpy())
  return leaves if isinstance(module, tnn.ConvTranspose2d) else {'Conv_0': leaves}


def params_from_torch(torch_model, flax_paths, expected) -> dict:
  """Copies the torch convs, in `modules()` order, to the flax module paths given in forward
  order ('Conv_0', 'ResnetBlock_1/Conv_0', ...; '' when the flax module is itself one of our
  conv layers), and checks the result has exactly the shapes of `expected` (a flax variables
  tree, e.g. from `jax.eval_shape`)."""
  convs = [m for m in torch_model.modules() if isinstance(m, (tnn.Conv2d, tnn.ConvTranspose2d))]
  assert len(convs) == len(flax_paths)
  params = {}
  for module, path in zip(convs, flax_paths):
    if not path:
      params.update(torch_conv_params(module))
      continue
    *parents, name = path.split('/')
    node = params
    for parent in parents:
      node = node.setdefault(parent, {})
    assert name.startswith('ConvTranspose_') == isinstance(module, tnn.ConvTranspose2d), path
    node[name] = torch_conv_params(module)
  variables = {'params': params}
  shapes = lambda tree: jax.tree.map(lambda x: x.shape, tree)
  assert shapes(variables) == shapes(expected)
  return variables


def max_abs(ours, theirs) -> float:
  ours, theirs = np.asarray(ours), np.asarray(theirs)
  assert ours.shape == theirs.shape
  return float(np.max(np.abs(ours - theirs)))


def compare(name, module, torch_model, flax_paths, x):
  """Runs `module` with `torch_model`'s weights on NHWC `x`; returns the max-abs difference."""
  expected_vars = jax.eval_shape(module.init, jax.random.key(0), x)
  variables = params_from_torch(torch_model, flax_paths, expected_vars)
  ours = jax.jit(module.apply)(variables, x)
  with torch.no_grad():
    theirs = from_torch(torch_model(to_torch(x)))
  err = max_abs(ours, theirs)
  print(f'max-abs {name}: {err:.2e}')
  return err


def normal(shape, seed=0, scale=1.0, shift=0.0):
  return (np.random.default_rng(seed).standard_normal(shape) * scale + shift).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Single layers.


@pytest.mark.parametrize('kernel, padding, output_padding, size', [
    (3, 1, 1, 9),  # The ResNet generator's upsampling.
    (4, 1, 0, 8),  # The U-Net's upsampling.
])
def test_conv_transpose_matches_torch(kernel, padding, output_padding, size):
  t = tnn.ConvTranspose2d(5, 7, kernel, stride=2, padding=padding, output_padding=output_padding)
  with torch.no_grad():
    t.weight.normal_()
    t.bias.normal_()
  ours = layers.ConvTranspose(7, kernel_size=kernel, stride=2, padding=padding,
                              output_padding=output_padding)
  x = normal((2, size, size, 5))
  err = compare(f'convT k{kernel} p{padding} op{output_padding}', ours, t, [''], x)
  assert err <= TOL


@pytest.mark.parametrize('kernel, stride, padding, pad_mode', [
    (3, 1, 1, 'reflect'),  # ResnetBlock.
    (7, 1, 3, 'reflect'),  # Generator input and output.
    (3, 2, 1, 'zeros'),  # Generator downsampling.
    (4, 2, 1, 'zeros'),  # PatchGAN.
])
def test_conv_matches_torch(kernel, stride, padding, pad_mode):
  conv = tnn.Conv2d(5, 7, kernel, stride=stride, padding=0 if pad_mode == 'reflect' else padding)
  with torch.no_grad():
    conv.weight.normal_(std=0.1)
    conv.bias.normal_()
  t = tnn.Sequential(tnn.ReflectionPad2d(padding), conv) if pad_mode == 'reflect' else conv
  ours = layers.Conv(7, kernel, stride=stride, padding=padding, pad_mode=pad_mode)
  x = normal((2, 16, 16, 5))
  err = compare(f'conv k{kernel} s{stride} p{padding} {pad_mode}', ours, t, [''], x)
  assert err <= TOL


@pytest.mark.parametrize('scale, shift', [
    (3.0, 2.0),
    (0.05, 0.5),  # |mean| = 10·std: a one-pass E[x²] − E[x]² variance is off by ~1e-4 here.
])
def test_instance_norm_matches_torch(scale, shift):
  x = normal((2, 12, 10, 6), scale=scale, shift=shift)
  ours = np.asarray(layers.Norm('instance').apply({}, x))
  with torch.no_grad():
    theirs = from_torch(tnn.InstanceNorm2d(6, affine=False)(to_torch(x)))
  x64 = x.astype(np.float64)
  exact = (x64 - x64.mean((1, 2), keepdims=True)) / np.sqrt(x64.var((1, 2), keepdims=True) + 1e-5)
  err = max_abs(ours, theirs)
  print(f'max-abs instance norm, std {scale} mean {shift}: {err:.2e} '
        f'(float64: ours {max_abs(ours, exact):.2e}, torch {max_abs(theirs, exact):.2e})')
  assert err <= TOL
  assert max_abs(ours, exact) <= TOL
  assert layers.count_params(jax.eval_shape(layers.Norm('instance').init, jax.random.key(0),
                                            x)) == 0


# ----------------------------------------------------------------------------------------------
# Whole blocks and models.


def test_resnet_block_matches_torch():
  dim = 16
  t = TorchResnetBlock(dim)
  with torch.no_grad():
    for p in t.parameters():
      p.normal_(std=0.1)
  ours = generators.ResnetBlock(features=dim)
  err = compare('ResnetBlock', ours, t, ['Conv_0', 'Conv_1'], normal((2, 12, 12, dim)))
  assert err <= TOL


def test_resnet_generator_matches_torch():
  ngf, n_blocks = 8, 2
  t = TorchResnetGenerator(3, 3, ngf, n_blocks)
  ours = generators.ResnetGenerator(ngf=ngf, n_blocks=n_blocks)
  paths = (['Conv_0', 'Conv_1', 'Conv_2']
           + [f'ResnetBlock_{i}/Conv_{j}' for i in range(n_blocks) for j in range(2)]
           + ['ConvTranspose_0', 'ConvTranspose_1', 'Conv_3'])
  err = compare('ResnetGenerator ngf 8, 2 blocks, 32²', ours, t, paths, normal((1, 32, 32, 3)))
  assert err <= TOL


def test_patch_discriminator_matches_torch():
  t = TorchNLayerDiscriminator(3, ndf=16, n_layers=3)
  with torch.no_grad():  # The reference init N(0, 0.02), biases included: logits ~ N(0, 0.6).
    for p in t.parameters():
      p.normal_(std=0.02)
  ours = discriminators.PatchDiscriminator(ndf=16, n_layers=3)
  x = normal((2, 64, 64, 3))
  err = compare('PatchGAN ndf 16, 64²', ours, t, [f'Conv_{i}' for i in range(5)], x)
  assert err <= TOL


def test_torch_reference_param_counts():
  count = lambda m: sum(p.numel() for p in m.parameters())
  assert count(TorchResnetGenerator(3, 3, 64, 9)) == 11_378_179
  assert count(TorchNLayerDiscriminator(3, 64, 3)) == 2_764_737


@pytest.mark.parametrize('name, num_downs', [('unet_256', 8), ('unet_128', 7)])
def test_unet_param_count_matches_torch(name, num_downs):
  theirs = sum(p.numel() for p in torch_unet(3, 3, num_downs, 64).parameters())
  ours = generators.UnetGenerator(ngf=64, num_downs=num_downs)
  size = 2**num_downs
  shapes = jax.eval_shape(ours.init, jax.random.key(0), jnp.zeros((1, size, size, 3)))
  print(f'{name}: torch {theirs:,} ours {layers.count_params(shapes):,}')
  assert layers.count_params(shapes) == theirs


def test_unet_128_matches_torch():
  num_downs, ngf = 7, 8
  t = torch_unet(3, 3, num_downs, ngf)
  with torch.no_grad():
    for p in t.parameters():
      p.normal_(std=0.1)
  ours = generators.UnetGenerator(ngf=ngf, num_downs=num_downs)
  paths = ([f'Conv_{i}' for i in range(num_downs)]
           + [f'ConvTranspose_{i}' for i in range(num_downs)])
  err = compare('unet_128 ngf 8, 128²', ours, t, paths, normal((1, 128, 128, 3)))
  assert err <= TOL
