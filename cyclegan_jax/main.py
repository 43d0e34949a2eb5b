"""Command line: `python -m cyclegan_jax.main --config=configs/demo.py --workdir=/tmp/demo`.

The only module that reads flags. Config values are overridden with `--config.key=value`; the
config is locked, so a mistyped key stops the run with its name.
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and samples.')
_MODE = flags.DEFINE_enum('mode', 'train', ['train', 'evaluate', 'ablation'],
                          'What to do with the config: train, evaluate the workdir\'s latest '
                          'checkpoint (FID/KID), or run a config\'s ablation (train + evaluate).')
_DISTRIBUTED = flags.DEFINE_bool(
    'jax_distributed', os.environ.get('CYCLEGAN_DISTRIBUTED') == '1',
    'Call jax.distributed.initialize() first (multi-host: TPU pods, several processes).')
flags.mark_flags_as_required(['config', 'workdir'])


def _hide_gpus_from_tensorflow() -> None:
  """TensorFlow (used by clu and tfds for I/O only) must not take the accelerators from JAX."""
  import tensorflow as tf
  tf.config.set_visible_devices([], 'GPU')


def _enable_compilation_cache(workdir: str) -> None:
  """Reuse compiled steps across runs (a resumed run starts in seconds, not a minute)."""
  import jax
  if not os.environ.get('JAX_COMPILATION_CACHE_DIR'):
    jax.config.update('jax_compilation_cache_dir', os.path.join(workdir, 'jax_cache'))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 1.0)


def _quiet_library_logs() -> None:
  """orbax logs every step of every save at INFO; keep its warnings, drop its chatter."""
  import logging as std_logging
  noisy = ('/orbax/', '/absl/testing/')
  std_logging.getLogger('absl').addFilter(
      lambda r: r.levelno >= std_logging.WARNING or not any(n in r.pathname for n in noisy))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  _quiet_library_logs()
  import jax
  if _DISTRIBUTED.value:
    jax.distributed.initialize()
  _hide_gpus_from_tensorflow()
  _enable_compilation_cache(_WORKDIR.value)
  logging.info('process %d of %d; %d local devices of %d: %s', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count(),
               jax.local_devices())
  from cyclegan_jax import checkpointing, train
  from cyclegan_jax.evaluate import ablation, evaluator
  run = {'train': train.train_and_evaluate, 'evaluate': evaluator.evaluate,
         'ablation': ablation.run}[_MODE.value]
  try:
    run(_CONFIG.value, _WORKDIR.value)
  except (FloatingPointError, checkpointing.CheckpointMismatchError, ValueError,
          FileNotFoundError) as e:
    sys.exit(f'error: {e}')


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's parser, but a bad --config.* override (unknown key, wrong type) is one line."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    sys.exit(f'error: {e}\nPass --helpfull to see the flags.')
  except (KeyError, AttributeError, TypeError) as e:
    sys.exit(f'error: bad config override: {e.args[0] if e.args else e}')


if __name__ == '__main__':
  app.run(main, flags_parser=_parse_flags)
