"""`python -m cyclegan_jax.benchmarks.export --size=256`: the exported SavedModel's latency
against the JAX translate path, for one image.

Builds the config's AtoB generator (configs/default.py: resnet_9blocks, ngf 64) with freshly
initialised weights (speed does not depend on their values), and times batch-1 size² calls
after two warm-up calls (compiles), in this one process:
- `jax_translate_ms`: `translate.translate_image`, uint8 in and out, with this process's conv
  impl (`auto`: winograd on the CPU backend), as `--mode=translate` runs each image;
- `jax_exported_fn_ms`: the function `export` converts, jitted in JAX (XLA's own convs), which
  tells the conv impl's share from the runtime's;
- `saved_model_ms`: `export`'s SavedModel, loaded with tf.saved_model.load and called.
Prints one JSON line: the median and min of each over --repeats calls, the largest grey-level
difference between the SavedModel's and translate's images, and the SavedModel's size.
"""

import argparse
import json
import os
from pathlib import Path
import statistics
import tempfile
import time

import jax
import numpy as np
import tensorflow as tf

from cyclegan_jax import checkpointing, export, families, translate
from cyclegan_jax.benchmarks import input as input_benchmark
from cyclegan_jax.families import base
from cyclegan_jax.models import convolution

WARMUP_CALLS = 2
_DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / 'configs' / 'default.py'


def fresh_generator(config, size: int) -> checkpointing.Loaded:
  """A Loaded holding only the config's AtoB generator, freshly initialised, so that translate
  and export run on it as on a workdir's."""
  family = families.get(config)
  models = family.create_models(config, 1, training_losses=False)
  name, _ = family.translators['AtoB']
  module = models.generators[name]
  init = jax.jit(lambda key: base.init_variables(module, key,
                                                 (size, size, config.model.input_nc)))
  params, batch_stats = init(base.init_key(jax.random.key(config.seed)))
  return checkpointing.Loaded(step=0, config=config, family=family, models=models,
                             params={name: params}, batch_stats={name: batch_stats},
                             manifest=None)


def time_calls(call, repeats: int) -> dict[str, float]:
  """Median and min milliseconds of `repeats` calls after the warm-up ones."""
  for _ in range(WARMUP_CALLS):
    call()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    call()
    times.append((time.perf_counter() - start) * 1e3)
  return {'median': round(statistics.median(times), 2), 'min': round(min(times), 2)}


def benchmark(config, size: int, repeats: int) -> dict[str, object]:
  """The record (module docstring); the load average says how busy the machine was."""
  loaded = fresh_generator(config, size)
  translator = translate.translator(loaded, 'AtoB')
  served = export.servable(loaded, 'AtoB', 'benchmark')
  image = np.random.default_rng(0).integers(0, 256, (size, size, translator.channels), np.uint8)
  exported_fn = jax.jit(served.apply)
  with tempfile.TemporaryDirectory() as tmp:
    export.save(served, tmp)
    saved_bytes = sum(f.stat().st_size for f in Path(tmp).rglob('*') if f.is_file())
    saved_model = tf.saved_model.load(tmp)
    calls = {'jax_translate': lambda: translate.translate_image(translator, image),
             'jax_exported_fn': lambda: np.asarray(exported_fn(served.weights, image[None])),
             'saved_model': lambda: saved_model(image[None]).numpy()}
    record = {f'{name}_ms': time_calls(call, repeats) for name, call in calls.items()}
    diff = np.abs(calls['saved_model']()[0].astype(int) -
                  calls['jax_translate']().astype(int)).max()
  return {'generator': config.model.generator, 'ngf': config.model.ngf, 'size': size,
          'batch': 1, 'repeats': repeats, 'translate_conv_impl': convolution.current_impl(),
          **record, 'max_grey_level_diff': int(diff),
          'saved_model_mb': round(saved_bytes / 2**20, 1), 'jax_version': jax.__version__,
          'tensorflow_version': tf.__version__, 'cpu_count': os.cpu_count(),
          'load_average': os.getloadavg()[0]}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--config', default=str(_DEFAULT_CONFIG), help='config file (get_config)')
  parser.add_argument('--size', type=int, default=256, help='image side')
  parser.add_argument('--repeats', type=int, default=10, help='timed calls per path')
  args = parser.parse_args()
  tf.config.set_visible_devices([], 'GPU')
  print(json.dumps(benchmark(input_benchmark.load_config(args.config), args.size,
                             args.repeats)))


if __name__ == '__main__':
  main()
