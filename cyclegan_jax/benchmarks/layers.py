"""`python -m cyclegan_jax.benchmarks.layers --config=configs/default.py --size=256`: where the
step's conv time goes, layer by layer, for every conv implementation.

Traces the config's generator and discriminator once at --size² to list the distinct conv
shapes they run (transposed convs as the sub-pixel convs they are computed as), then times each
shape's forward pass and its forward plus backward (input and kernel gradients) under each
conv impl in IMPLS, and prints one JSON line per shape with the times and FLOP rates:

  {"layer": "ResnetBlock_0/Conv_0", "input": [1, 64, 64, 256], "kernel": [3, 3, 256, 256],
   "stride": 1, "pad": "reflect 1", "uses": 18, "xla_fwd_ms": ..., "cpu_fwd_bwd_ms": ..., ...}

`uses` counts the layers of one generator (or discriminator) with that shape. The step itself
is timed by `python -m cyclegan_jax.benchmarks.step`.
"""

import argparse
import json
import statistics
import time
from typing import Any

from flax import traverse_util
import flax.linen as nn
import jax
import jax.numpy as jnp

from cyclegan_jax.benchmarks import input as input_benchmark
from cyclegan_jax.models import (conv_transpose, convolution, discriminators, generators,
                                 layers)

IMPLS = ('xla', 'cpu', 'winograd')


def conv_shapes(config, size: int) -> list[dict[str, Any]]:
  """The distinct convs the config's G and D apply to one size² image, in order of first use."""
  found: dict[tuple, dict[str, Any]] = {}
  paths: dict[tuple, set[tuple[int, str]]] = {}  # (network, module path) of each shape's convs.

  def record(next_fun, args, kwargs, context):
    module = context.module
    if (isinstance(module, (layers.Conv, layers.ConvTranspose))
        and context.method_name == '__call__'):
      x = args[0]
      k = module.kernel_size
      if isinstance(module, layers.Conv):
        spec = dict(kernel=[k, k, x.shape[-1], module.features], stride=module.stride,
                    padding=module.padding, pad_mode=module.pad_mode, transpose=False)
      else:
        spec = dict(kernel=[k, k, x.shape[-1], module.features], stride=module.stride,
                    padding=module.padding, output_padding=module.output_padding,
                    transpose=True)
      key = (tuple(x.shape), json.dumps(spec, sort_keys=True))
      path = '/'.join(module.scope.path)
      found.setdefault(key, {'layer': path, 'input': list(x.shape), **spec})
      paths.setdefault(key, set()).add((network, path))
    return next_fun(*args, **kwargs)

  model = config.model
  image = jax.ShapeDtypeStruct((1, size, size, model.input_nc), jnp.float32)
  kernels = []  # Per network: {module path: its kernel} (a scan stacks its layers' kernels).
  for network, module in enumerate((generators.create_generator(model),
                                    discriminators.create_discriminator(model))):
    with nn.intercept_methods(record):
      variables = jax.eval_shape(module.init, jax.random.key(0), image)
    kernels.append(traverse_util.flatten_dict(variables['params'], sep='/'))

  def layers_at(network: int, path: str) -> int:
    """A scan traces its body more than once, but stacks its layers' kernels: count those."""
    (kernel,) = [k for name, k in kernels[network].items()
                 if name.startswith(f'{path}/') and name.endswith('/kernel')]
    return kernel.shape[0] if kernel.ndim == 5 else 1

  for key, entry in found.items():
    entry['uses'] = sum(layers_at(*where) for where in paths[key])
  return list(found.values())


def _layer_fn(spec: dict[str, Any], impl: str):
  """(x, kernel) → output of the conv `spec` describes, computed by `impl`."""
  if spec['transpose']:
    return lambda x, w: conv_transpose.conv_transpose(x, w, spec['stride'], spec['padding'],
                                                   spec['output_padding'], impl)
  pad = spec['padding']

  def conv(x, w):
    if spec['pad_mode'] == 'reflect' and pad:
      x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode='reflect')
      padding = ((0, 0), (0, 0))
    else:
      padding = ((pad, pad), (pad, pad))
    return convolution.conv_general_dilated(x, w, (spec['stride'],) * 2, padding,
                                            dimension_numbers=('NHWC', 'HWIO', 'NHWC'), impl=impl)
  return conv


def _min_seconds(fn, *args, repeats: int) -> float:
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return min(times)


def _output_and_grads(fn, x, w, dy):
  """The output too, so that XLA cannot drop the forward pass from a forward+backward timing."""
  y, vjp = jax.vjp(fn, x, w)
  return y, *vjp(dy)


def time_layer(spec: dict[str, Any], repeats: int) -> dict[str, Any]:
  """Forward and forward+backward times of one conv shape under every impl."""
  keys = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(keys[0], spec['input'], jnp.float32)
  w = jax.random.normal(keys[1], spec['kernel'], jnp.float32) * 0.02
  row = dict(spec)
  reference_fn = jax.jit(_layer_fn(spec, 'xla'))
  y = reference_fn(x, w)
  dy = jax.random.normal(keys[2], y.shape, jnp.float32)
  # FLOPs of the forward pass as XLA counts them for its own conv; backward is twice that.
  cost = reference_fn.lower(x, w).compile().cost_analysis()
  flops = float((cost[0] if isinstance(cost, (list, tuple)) else cost).get('flops', 0.0))
  row['fwd_gflop'] = round(flops / 1e9, 3)
  for impl in IMPLS:
    fn = _layer_fn(spec, impl)
    forward = jax.jit(fn)
    both = jax.jit(lambda x, w, dy, fn=fn: _output_and_grads(fn, x, w, dy))
    fwd_s = _min_seconds(forward, x, w, repeats=repeats)
    both_s = _min_seconds(both, x, w, dy, repeats=repeats)
    row[f'{impl}_fwd_ms'] = round(fwd_s * 1e3, 2)
    row[f'{impl}_fwd_bwd_ms'] = round(both_s * 1e3, 2)
    row[f'{impl}_fwd_bwd_gflop_per_s'] = round(3 * flops / both_s / 1e9, 1)
  return row


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--config', required=True, help='config file (get_config)')
  parser.add_argument('--size', type=int, help='image size; default: config.data.crop_size')
  parser.add_argument('--repeats', type=int, default=5,
                      help='timed calls per measurement (the fastest is kept)')
  args = parser.parse_args()
  config = input_benchmark.load_config(args.config)
  size = args.size or config.data.crop_size
  rows = [time_layer(spec, args.repeats) for spec in conv_shapes(config, size)]
  for row in rows:
    print(json.dumps(row))
  totals = {impl: sum(r['uses'] * r[f'{impl}_fwd_bwd_ms'] for r in rows) for impl in IMPLS}
  print(json.dumps({'size': size, 'sum_uses_x_fwd_bwd_ms': {k: round(v, 1)
                                                            for k, v in totals.items()},
                    'median_speedup_cpu_vs_xla': round(statistics.median(
                        r['xla_fwd_bwd_ms'] / r['cpu_fwd_bwd_ms'] for r in rows), 2)}))


if __name__ == '__main__':
  main()
