"""Run as a script: the per-step losses of ONE process on the global batches that a run of
`process_count` processes × `local_devices` devices is fed (each host's batch from
`input_pipeline` for that topology, concatenated in process order). Prints them as JSON.

The multi-host test compares a real `launch/local_multiprocess.sh` run against this.

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python -m tests.multihost_reference \
        STEPS PROCESS_COUNT LOCAL_DEVICES --config.batch_size=4 ...
"""

import functools
import json
import sys

import jax
import numpy as np
from ml_collections import config_flags
from absl import app, flags

from cyclegan_jax import parallel
from cyclegan_jax.data import input_pipeline
from cyclegan_jax.families import cyclegan

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/test.py')


def main(argv):
  steps, process_count, local_devices = map(int, argv[1:])
  config = _CONFIG.value
  data = input_pipeline.open(config)
  models = cyclegan.create_models(config, data.steps_per_epoch())
  state = parallel.replicate(
      cyclegan.create_train_state(config, models, jax.random.key(config.seed)))
  p_step = parallel.pmap_step(functools.partial(cyclegan.train_step, models=models,
                                                config=config))
  hosts = [data.train_iterator(process_index=p, process_count=process_count,
                               local_devices=local_devices)
           for p in range(process_count)]
  losses = []
  for _ in range(steps):
    batches = [next(host) for host in hosts]
    global_batch = jax.tree.map(lambda *x: np.concatenate(x), *batches)
    state, metrics = p_step(state, parallel.device_put_sharded(global_batch))
    losses.append({k: float(v[0]) for k, v in jax.device_get(metrics).items()})
  print(json.dumps(losses))


if __name__ == '__main__':
  flags.FLAGS(sys.argv[:1] + [a for a in sys.argv[1:] if a.startswith('--')])
  main([sys.argv[0]] + [a for a in sys.argv[1:] if not a.startswith('--')])
