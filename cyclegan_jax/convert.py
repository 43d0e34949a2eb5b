"""Reference PyTorch CycleGAN weights (.pth state dicts) → our flax parameter trees.

    python -m cyclegan_jax.convert --pth=latest_net_G.pth --generator=resnet_9blocks \\
        --direction=AtoB --out=workdirs/vangogh

writes a standard workdir (config.json and an orbax checkpoint at step 0) holding the converted
generator as g_ab (AtoB) or g_ba (BtoA); `--mode=translate`, resuming and fine-tuning use it
unchanged. The other three networks are freshly initialised.

The reference (junyanz/pytorch-CycleGAN-and-pix2pix, models/networks.py) names its layers by
their index in nn.Sequential: `model.1.weight`, `model.10.conv_block.1.weight`, and for the
U-Net the nested blocks `model.model.1.model.3.model.1.weight`. Each layout below lists
(torch module, our module path) in forward order. Conv kernels go OIHW → HWIO; transposed-conv
kernels (I, O, kH, kW) go to the flipped HWIO kernel our sub-pixel `layers.ConvTranspose`
takes. Its models train with instance norm, which has no parameters (old files carry running
statistics for it, which are ignored); DataParallel's `module.` prefix is stripped.

Naming: the reference's G_A maps A → B (our g_ab), G_B maps B → A (g_ba), and its D_A judges
domain B (`backward_D_A` compares real_B with fake_B = G_A(A)), so D_A → our d_b, D_B → d_a.
"""

import argparse
import importlib.util
from pathlib import Path
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from cyclegan_jax import checkpointing, families, parallel
from cyclegan_jax.families import cyclegan
from cyclegan_jax.models import block_layout, discriminators, generators, weights

# The model options of every published reference model (instance norm, no dropout).
_REFERENCE_MODEL = dict(input_nc=3, output_nc=3, norm='instance', init_type='normal',
                        init_gain=0.02, dropout=0.0, activation='relu', leaky_slope=0.2,
                        dtype='float32', n_layers_d=3, antialias=False, antialias_d=False,
                        n_downsampling=2)
_IGNORED_SUFFIXES = ('.running_mean', '.running_var', '.num_batches_tracked')
_DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / 'configs' / 'default.py'


class PthMismatchError(ValueError):
  """The state dict does not fit the requested architecture; the message names the keys."""


def _resnet_layout(n_blocks: int, keys: set[str]) -> list[tuple[str, str]]:
  """The residual blocks one by one (ResnetBlock_i), as the reference keys them."""
  second = 6 if any('.conv_block.6.' in k for k in keys) else 5  # 6 with dropout.
  layout = [('model.1', 'Conv_0'), ('model.4', 'Conv_1'), ('model.7', 'Conv_2')]
  for i in range(n_blocks):
    block = f'model.{10 + i}.conv_block'
    layout += [(f'{block}.1', f'ResnetBlock_{i}/Conv_0'),
               (f'{block}.{second}', f'ResnetBlock_{i}/Conv_1')]
  up = 10 + n_blocks
  return layout + [(f'model.{up}', 'ConvTranspose_0'), (f'model.{up + 3}', 'ConvTranspose_1'),
                   (f'model.{up + 7}', 'Conv_3')]


def _unet_layout(num_downs: int) -> list[tuple[str, str]]:
  """Level 0 (outermost) is [downconv, submodule, relu, upconv, tanh]; middle levels are
  [lrelu, downconv, norm, submodule, relu, upconv, norm(, dropout)]; the innermost is
  [lrelu, downconv, relu, upconv, norm]."""
  blocks = ['model', 'model.model.1']
  while len(blocks) < num_downs:
    blocks.append(f'{blocks[-1]}.model.3')
  down = [(f'{b}.model.{0 if d == 0 else 1}', f'Conv_{d}') for d, b in enumerate(blocks)]
  up = [(f'{b}.model.{3 if d in (0, num_downs - 1) else 5}', f'ConvTranspose_{num_downs - 1 - d}')
        for d, b in enumerate(blocks)]
  return down + up[::-1]


def _patch_layout(n_layers: int) -> list[tuple[str, str]]:
  return [(f'model.{0 if i == 0 else 3 * i - 1}', f'Conv_{i}') for i in range(n_layers + 2)]


def _flax_to_torch_shape(shape: tuple[int, ...], transposed: bool) -> tuple[int, ...]:
  if len(shape) == 1:
    return tuple(shape)
  h, w, i, o = shape
  return (i, o, h, w) if transposed else (o, i, h, w)


def torch_to_flax_kernel(weight: np.ndarray, transposed: bool) -> np.ndarray:
  """Conv2d (O, I, kH, kW) → HWIO; ConvTranspose2d (I, O, kH, kW) → flipped HWIO."""
  if transposed:
    return np.ascontiguousarray(np.flip(weight.transpose(2, 3, 0, 1), axis=(0, 1)))
  return np.ascontiguousarray(weight.transpose(2, 3, 1, 0))


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """The tensors of a reference .pth, `module.` stripped, instance-norm statistics dropped."""
  state = weights.read_torch(path)
  if not isinstance(state, dict):
    raise weights.PthFormatError(f'{path}: expected a state dict, got {type(state).__name__}')
  state = {k.removeprefix('module.'): v for k, v in state.items()}
  return {k: v for k, v in state.items() if not k.endswith(_IGNORED_SUFFIXES)}


def params_from_state_dict(state: dict[str, np.ndarray], layout: list[tuple[str, str]],
                           expected: dict[str, Any], what: str) -> dict[str, Any]:
  """Places each torch layer of `layout` at its flax path, checking keys and shapes against
  `expected` (the module's params from `jax.eval_shape`)."""
  pairs = {}  # torch key → (flax path of the leaf, transposed?)
  for prefix, path in layout:
    node = expected
    for part in path.split('/'):
      node = node[part]
    transposed = 'Conv_0' not in node  # Our ConvTranspose owns its kernel; Conv wraps nn.Conv.
    leaf_path = path if transposed else f'{path}/Conv_0'
    pairs[f'{prefix}.weight'] = (f'{leaf_path}/kernel', transposed)
    if 'bias' in (node if transposed else node['Conv_0']):
      pairs[f'{prefix}.bias'] = (f'{leaf_path}/bias', transposed)
  unknown = sorted(set(state) - set(pairs))
  missing = [k for k in pairs if k not in state]
  if unknown or missing:
    raise PthMismatchError(f'the state dict does not match {what}: '
                           f'unknown keys {unknown or "none"}; missing keys {missing or "none"}')
  flat_expected = flax.traverse_util.flatten_dict(expected, sep='/')
  flat = {}
  for key, (leaf, transposed) in pairs.items():
    want = _flax_to_torch_shape(flat_expected[leaf].shape, transposed)
    value = np.asarray(state[key], np.float32)
    if value.shape != want:
      raise PthMismatchError(f'{key}: the file has shape {value.shape}, {what} expects {want}')
    flat[leaf] = torch_to_flax_kernel(value, transposed) if value.ndim == 4 else value
  return flax.traverse_util.unflatten_dict(flat, sep='/')


def _expected_params(module, size: int) -> dict[str, Any]:
  """The module's parameter shapes, residual blocks one by one as the reference keys them."""
  x = jnp.zeros((1, size, size, _REFERENCE_MODEL['input_nc']), jnp.float32)
  return jax.eval_shape(
      lambda: block_layout.unstack_blocks(module.init(jax.random.key(0), x, train=False)['params']))


def _width(state: dict[str, np.ndarray], key: str) -> int:
  """ngf/ndf: the first conv's output channels (64 if absent; the key is then named missing)."""
  return int(state[key].shape[0]) if key in state and state[key].ndim == 4 else 64


def reference_model_config(generator: str, ngf: int = 64, ndf: int = 64,
                           discriminator: str = 'basic') -> ml_collections.ConfigDict:
  """The `config.model` of the reference's published models."""
  return ml_collections.ConfigDict(dict(_REFERENCE_MODEL, generator=generator, ngf=ngf, ndf=ndf,
                                        discriminator=discriminator))


def generator_layout(generator_name: str, state: dict[str, np.ndarray]):
  """Our module for a reference generator name (ngf from `state`) and its layout."""
  first = 'model.model.0.weight' if generator_name.startswith('unet') else 'model.1.weight'
  module = generators.create_generator(
      reference_model_config(generator_name, ngf=_width(state, first)))
  if isinstance(module, generators.UnetGenerator):
    return module, _unet_layout(module.num_downs)
  return module, _resnet_layout(module.n_blocks, set(state))


def generator_params_from_pth(path: str, generator_name: str) -> dict[str, Any]:
  """Flax params of a reference generator (ResnetGenerator or UnetGenerator) `.pth` for the
  module `generators.create_generator` builds (ngf read from the file)."""
  state = read_state_dict(path)
  module, layout = generator_layout(generator_name, state)
  expected = _expected_params(module, 256)
  return block_layout.stack_blocks(params_from_state_dict(
      state, layout, expected, f'generator {generator_name} (ngf {module.ngf}) in {path}'))


def discriminator_params_from_pth(path: str, discriminator_name: str,
                                  n_layers: int = 3) -> dict[str, Any]:
  """Flax params of a reference NLayerDiscriminator `.pth` ('basic' is n_layers 3)."""
  if discriminator_name not in ('basic', 'n_layers'):
    raise ValueError(f'cannot import discriminator {discriminator_name!r}: only basic and '
                     'n_layers (the reference NLayerDiscriminator) are supported')
  state = read_state_dict(path)
  n_layers = 3 if discriminator_name == 'basic' else n_layers
  module = discriminators.PatchDiscriminator(ndf=_width(state, 'model.0.weight'),
                                             n_layers=n_layers)
  expected = _expected_params(module, 256)
  return params_from_state_dict(state, _patch_layout(n_layers), expected,
                                f'discriminator {discriminator_name} (n_layers {n_layers}, '
                                f'ndf {module.ndf}) in {path}')


def init_params_from_pth(config: ml_collections.ConfigDict,
                         params: dict[str, Any]) -> dict[str, Any]:
  """`params` with the trees named in `config.init_from_pth` replaced by reference weights."""
  if ((config.model.antialias or config.model.antialias_d or config.model.n_downsampling != 2)
      and any(config.init_from_pth.values())):
    raise PthMismatchError('init_from_pth: the reference CycleGAN models have strided and '
                           'transposed convs, two of each; set model.antialias and '
                           'model.antialias_d to False and model.n_downsampling to 2 to start '
                           'from them.')
  params = dict(params)
  for name, path in config.init_from_pth.items():
    if not path:
      continue
    if name in ('g_ab', 'g_ba'):
      loaded = generator_params_from_pth(path, config.model.generator)
    else:
      loaded = discriminator_params_from_pth(path, config.model.discriminator,
                                             config.model.n_layers_d)
    shapes = lambda tree: jax.tree.map(np.shape, tree)
    if shapes(loaded) != shapes(params[name]):
      raise PthMismatchError(f'init_from_pth.{name}: {path} does not fit the configured '
                             f'{name} (check model.ngf/ndf and the architecture)')
    params[name] = jax.tree.map(jnp.asarray, loaded)
    logging.info('initialised %s from %s', name, path)
  return params


def write_workdir(config: ml_collections.ConfigDict, workdir: str,
                  params: dict[str, Any]) -> None:
  """A step-0 workdir, as a fresh training run would write it, with the trees in `params`
  replacing freshly initialised ones."""
  family = families.get(config)
  models = family.create_models(config, steps_per_epoch=1, training_losses=False)
  state = family.fresh_state(config, models)
  state = state.replace(params={**state.params, **jax.tree.map(jnp.asarray, params)})
  Path(workdir).mkdir(parents=True, exist_ok=True)
  manager = checkpointing.create_manager(workdir, config.keep_checkpoints)
  try:
    checkpointing.save(manager, parallel.replicate(state), config)
  finally:
    manager.wait_until_finished()
    manager.close()
  (Path(workdir) / 'config.json').write_text(config.to_json_best_effort(indent=2))


def _load_config(path: str) -> ml_collections.ConfigDict:
  spec = importlib.util.spec_from_file_location('_convert_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--pth', required=True, help='a reference generator, e.g. latest_net_G.pth')
  parser.add_argument('--generator', default='resnet_9blocks',
                      help='its architecture: resnet_9blocks, resnet_6blocks, unet_256, unet_128')
  parser.add_argument('--direction', choices=('AtoB', 'BtoA'), default='AtoB',
                      help='AtoB stores it as g_ab (the reference G_A), BtoA as g_ba (G_B)')
  parser.add_argument('--out', required=True, help='the workdir to write')
  parser.add_argument('--config', default=str(_DEFAULT_CONFIG),
                      help='config for everything but the generator (data, loss, optimizer)')
  args = parser.parse_args(argv)
  if Path(args.out, 'checkpoints').exists():
    raise SystemExit(f'error: {args.out} already holds checkpoints; choose a new --out')
  try:
    params = generator_params_from_pth(args.pth, args.generator)
  except (ValueError, FileNotFoundError) as e:
    raise SystemExit(f'error: {e}') from e
  config = _load_config(args.config)
  ngf = params['Conv_0']['Conv_0']['kernel'].shape[-1]
  config.model.update(generator=args.generator, ngf=ngf, norm='instance', activation='relu')
  name = 'g_ab' if args.direction == 'AtoB' else 'g_ba'
  write_workdir(config, args.out, {name: params})
  others = ', '.join(n for n in cyclegan.GENERATORS + cyclegan.DISCRIMINATORS if n != name)
  print(f'wrote {args.out}: {args.pth} as {name} ({args.generator}, ngf {ngf}) in a step-0 '
        f'checkpoint and config.json; {others} are freshly initialised (seed {config.seed}).\n'
        f'translate: python -m cyclegan_jax.translate --workdir={args.out} '
        f'--direction={args.direction} --input=PHOTOS --output=OUT')


if __name__ == '__main__':
  main()
