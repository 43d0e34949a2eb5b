"""Our layers and models against PyTorch re-statements of the reference CycleGAN code.

The torch modules (cyclegan_jax/benchmarks/torch_reference.py) restate, layer for layer, the
reference networks of junyanz/pytorch-CycleGAN-and-pix2pix (models/networks.py). Weights are
copied from torch into flax parameter trees, module by module; test_convert.py covers importing
whole reference state dicts by key.

Our float32 networks are held to the torch modules run in float64, the function itself. torch's
own float32 kernels differ from machine to machine: on one CI machine the float32 generator was
3.9e-5 from ours, where float32 rounding on this one is 1.2e-6 from float64 on either side.
"""

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cyclegan_jax import convert, losses
from cyclegan_jax.models import block_layout, discriminators, generators, layers

torch = pytest.importorskip('torch')
from cyclegan_jax.benchmarks.torch_reference import (  # noqa: E402
    TorchNLayerDiscriminator, TorchResnetBlock, TorchResnetGenerator, tnn, torch_unet)

TOL = 1e-5


@pytest.fixture(autouse=True)
def _deterministic_torch():
  torch.manual_seed(0)
  with jax.default_matmul_precision('highest'):
    yield


# ----------------------------------------------------------------------------------------------
# Weight copying and layout helpers.


def to_torch(x) -> 'torch.Tensor':
  return torch.from_numpy(np.ascontiguousarray(np.transpose(np.asarray(x), (0, 3, 1, 2))))


def from_torch(t) -> np.ndarray:
  return np.transpose(t.detach().numpy(), (0, 2, 3, 1))


def torch_conv_params(module) -> dict:
  """One of our `layers.Conv` (wraps a flax Conv) or `layers.ConvTranspose` (owns its kernel)."""
  transposed = isinstance(module, tnn.ConvTranspose2d)
  leaves = {'kernel': jnp.asarray(convert.torch_to_flax_kernel(module.weight.detach().numpy(),
                                                               transposed))}
  if module.bias is not None:
    leaves['bias'] = jnp.asarray(module.bias.detach().numpy())
  return leaves if transposed else {'Conv_0': leaves}


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
  """Runs `module` with `torch_model`'s weights on NHWC `x`; returns its max-abs difference from
  `torch_model` run in float64.
  `flax_paths` name residual blocks one by one (ResnetBlock_i), stacked here as the scan
  takes them."""
  expected_vars = jax.eval_shape(lambda: block_layout.unstack_blocks(
      module.init(jax.random.key(0), x)))
  variables = block_layout.stack_blocks(params_from_torch(torch_model, flax_paths,
                                                          expected_vars))
  ours = jax.jit(module.apply)(variables, x)
  with torch.no_grad():
    exact = from_torch(copy.deepcopy(torch_model).double()(to_torch(x).double()))
    theirs = from_torch(torch_model(to_torch(x)))
  err = max_abs(ours, exact)
  print(f'max-abs from float64 torch, {name}: ours {err:.2e}, '
        f'float32 torch {max_abs(theirs, exact):.2e}')
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


# ----------------------------------------------------------------------------------------------
# CUT's antialiased sampling and PatchNCE, restated in torch from the CUT paper's reference
# code (taesungp/contrastive-unpaired-translation: Downsample, Upsample, PatchNCELoss).


def _torch_blur_filter(taps, channels):
  a = torch.tensor(taps, dtype=torch.float32)
  filt = a[:, None] * a[None, :]
  return (filt / filt.sum())[None, None].repeat(channels, 1, 1, 1)


@pytest.mark.parametrize('height, width', [(8, 6), (7, 5)])
def test_blur_downsample_matches_torch(height, width):
  x = normal((2, height, width, 3))
  padded = torch.nn.ReflectionPad2d(1)(to_torch(x))
  expected = torch.nn.functional.conv2d(padded, _torch_blur_filter([1., 2., 1.], 3), stride=2,
                                        groups=3)
  np.testing.assert_allclose(layers.blur_downsample(x), from_torch(expected), atol=TOL)


def test_blur_upsample_matches_torch():
  x = normal((2, 5, 4, 3))
  padded = torch.nn.ReplicationPad2d(1)(to_torch(x))
  full = torch.nn.functional.conv_transpose2d(padded, 4 * _torch_blur_filter([1., 3., 3., 1.], 3),
                                              stride=2, padding=2, groups=3)
  expected = full[:, :, 1:, 1:][:, :, :-1, :-1]
  np.testing.assert_allclose(layers.blur_upsample(x), from_torch(expected), atol=TOL)


def test_patch_nce_matches_torch():
  rng = np.random.default_rng(0)
  q, k = (rng.normal(size=(2, 16, 8)).astype(np.float32) for _ in range(2))
  q, k = (x / np.linalg.norm(x, axis=-1, keepdims=True) for x in (q, k))
  tq, tk = torch.from_numpy(q).reshape(-1, 8), torch.from_numpy(k).reshape(-1, 8)
  positive = (tq * tk).sum(-1, keepdim=True)
  negative = torch.bmm(tq.view(2, -1, 8), tk.view(2, -1, 8).transpose(2, 1))
  negative = negative.masked_fill(torch.eye(16, dtype=torch.bool)[None], -10.0).view(-1, 16)
  logits = torch.cat([positive, negative], 1) / 0.07
  expected = torch.nn.functional.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long))
  assert float(losses.patch_nce_loss(jnp.asarray(q), jnp.asarray(k))) == pytest.approx(
      float(expected), rel=1e-5)


def test_patch_sampling_projection_and_nce_match_torch():
  """CUT's calculate_NCE_loss from given feature maps: PatchSampleF (the same locations for
  query and key, an MLP per layer, L2 norm) then PatchNCE per layer, λ·mean over layers."""
  from cyclegan_jax.families import cut
  from cyclegan_jax.models import projection
  rng = np.random.default_rng(0)
  channels, lambda_nce = (3, 8, 16), 2.0
  feats_q = [rng.normal(size=(2, 6, 5, c)).astype(np.float32) for c in channels]
  feats_k = [rng.normal(size=(2, 6, 5, c)).astype(np.float32) for c in channels]
  ids = [rng.permutation(30)[:12] for _ in channels]
  head = projection.PatchProjection(features=32)
  params = head.init(jax.random.key(0), [jnp.zeros((1, 1, c)) for c in channels])['params']
  q = head.apply({'params': params}, cut._patches([jnp.asarray(f) for f in feats_q], ids))
  k = head.apply({'params': params}, cut._patches([jnp.asarray(f) for f in feats_k], ids))
  ours = lambda_nce * sum(losses.patch_nce_loss(a, b) for a, b in zip(q, k)) / len(channels)

  def torch_mlp(layer, x):
    dense = lambda i: (torch.tensor(np.asarray(params[f'Dense_{2 * layer + i}']['kernel']).T),
                       torch.tensor(np.asarray(params[f'Dense_{2 * layer + i}']['bias'])))
    (w0, b0), (w1, b1) = dense(0), dense(1)
    y = torch.nn.functional.linear(torch.relu(torch.nn.functional.linear(x, w0, b0)), w1, b1)
    return y / (y.pow(2).sum(1, keepdim=True).pow(0.5) + 1e-7)

  def sample(layer, feat):  # PatchSampleF: NCHW → [B·P, C] at the given locations.
    flat = to_torch(feat).permute(0, 2, 3, 1).flatten(1, 2)
    return torch_mlp(layer, flat[:, torch.from_numpy(ids[layer])].flatten(0, 1))

  total = 0.0
  for layer in range(len(channels)):
    tq, tk = sample(layer, feats_q[layer]), sample(layer, feats_k[layer]).detach()
    positive = (tq * tk).sum(1, keepdim=True)
    dim = tq.shape[1]
    negative = torch.bmm(tq.view(2, -1, dim), tk.view(2, -1, dim).transpose(2, 1))
    negative = negative.masked_fill(torch.eye(12, dtype=torch.bool)[None], -10.0).view(-1, 12)
    logits = torch.cat([positive, negative], 1) / 0.07
    total += (torch.nn.functional.cross_entropy(
        logits, torch.zeros(len(logits), dtype=torch.long), reduction='none') * lambda_nce).mean()
  assert float(ours) == pytest.approx(float(total / len(channels)), rel=1e-5)
