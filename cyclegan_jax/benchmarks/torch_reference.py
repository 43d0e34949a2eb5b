"""PyTorch re-statements of the reference CycleGAN networks, for the equivalence tests and the
PyTorch step benchmark (`benchmarks.torch_step`). Importing it needs torch (the `torch` extra);
nothing in the core package imports it.

They restate, layer for layer, junyanz/pytorch-CycleGAN-and-pix2pix models/networks.py:
ResnetBlock, ResnetGenerator, NLayerDiscriminator, UnetSkipConnectionBlock and UnetGenerator,
so their state_dict keys are those of the published .pth files (model.1.weight,
model.10.conv_block.1.weight, model.model.1.model.1.weight, ...).
"""

import functools

import torch

tnn = torch.nn

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


class TorchUnetGenerator(tnn.Module):
  """The reference wrapper: its one child `model` gives the keys their `model.model.` prefix."""

  def __init__(self, input_nc, output_nc, num_downs, ngf=64, norm_layer=INSTANCE_NORM):
    super().__init__()
    self.model = torch_unet(input_nc, output_nc, num_downs, ngf, norm_layer)

  def forward(self, x):
    return self.model(x)
