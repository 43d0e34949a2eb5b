"""Command line: `python -m cyclegan_jax.main --config=configs/demo.py --workdir=/tmp/demo`.

The one absl flags module: flags → one config, checked once (every bad key or value named in one
message) → one driver (train, evaluate, ablation, translate, export). Config values are
overridden with `--config.key=value`; the config is locked, so a mistyped key stops the run with
its name.
"""

from collections.abc import Mapping
import os
import sys

# TensorFlow (only --mode=export and gs:// file I/O here, never the model's math) prints a line
# about its oneDNN kernels to stderr at import, before any log setting applies. A user's own
# value wins.
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')

from absl import app, flags, logging  # noqa: E402  (after the environment TensorFlow reads)
from ml_collections import config_flags  # noqa: E402


def _env_int(name: str) -> int | None:
  value = os.environ.get(name)
  return None if value is None else int(value)


_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and samples.')
_MODE = flags.DEFINE_enum(
    'mode', 'train', ['train', 'evaluate', 'ablation', 'translate', 'export'],
    'train (with --config); evaluate the workdir\'s latest checkpoint (FID/KID; DCGAN: of its '
    'samples, and on digits how clear they are); ablation: run a '
    'config\'s ablation (train + evaluate); translate: a workdir\'s generator on --input; '
    'export: a workdir\'s generator as a TensorFlow SavedModel in --out.')
_DIRECTION = flags.DEFINE_enum('direction', 'AtoB', ['AtoB', 'BtoA', 'sample'],
                               'translate, export: CycleGAN G_AB (AtoB) or G_BA (BtoA); CUT: '
                               'AtoB only; export: sample for DCGAN\'s G (from latents).')
_INPUT = flags.DEFINE_string('input', None, 'translate: an image, a folder or a zip.')
_OUTPUT = flags.DEFINE_string('output', None, 'translate: folder for the PNGs; export: a new '
                              'folder for the SavedModel (also --out).')
flags.DEFINE_alias('out', 'output')
_DISTRIBUTED = flags.DEFINE_bool(
    'jax_distributed', os.environ.get('CYCLEGAN_DISTRIBUTED') == '1',
    'Call jax.distributed.initialize() first (multi-host: TPU pods, several processes). On TPU '
    'VMs and managed clusters it finds its peers itself; elsewhere give the three flags below.')
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', os.environ.get('JAX_COORDINATOR_ADDRESS'),
    'host:port of process 0, with --jax_distributed off TPU (env JAX_COORDINATOR_ADDRESS).')
_NUM_PROCESSES = flags.DEFINE_integer(
    'num_processes', _env_int('CYCLEGAN_NUM_PROCESSES'),
    'Number of processes, with --jax_distributed off TPU (env CYCLEGAN_NUM_PROCESSES).')
_PROCESS_ID = flags.DEFINE_integer(
    'process_id', _env_int('CYCLEGAN_PROCESS_ID'),
    'This process\'s index, with --jax_distributed off TPU (env CYCLEGAN_PROCESS_ID).')
_CONV_IMPL = flags.DEFINE_enum(
    'conv_impl', os.environ.get('CYCLEGAN_CONV_IMPL', 'auto'),
    ['auto', 'xla', 'cpu', 'winograd', 'patches'],
    'How this process computes convolutions (env CYCLEGAN_CONV_IMPL): auto picks winograd on the '
    'CPU backend (the forms its XLA runs fastest, and Winograd tiles for large 3x3 convs) and xla '
    'on GPU/TPU. Parameters are the same and results agree to float32 rounding (winograd: up to '
    '4e-6 of a conv\'s output scale); a machine setting, so it is stored in no config or '
    'checkpoint.')
_PEER_TIMEOUT = flags.DEFINE_float(
    'peer_timeout_s', float(os.environ.get('CYCLEGAN_PEER_TIMEOUT_S', 180)),
    'Multi-process: when another process has been silent this long (killed, out of memory, a '
    'lost VM), this one stops with a message naming it (env CYCLEGAN_PEER_TIMEOUT_S).')
_COMPILATION_CACHE = flags.DEFINE_string(
    'compilation_cache', None,
    'Directory of the persistent cache of compiled programs, which later runs, translate and '
    "export reuse; '' or none turns it off. Default: env JAX_COMPILATION_CACHE_DIR, else "
    '$XDG_CACHE_HOME/cyclegan_jax/jax (~/.cache/cyclegan_jax/jax).')
_COMPILATION_CACHE_MAX_GB = flags.DEFINE_float(
    'compilation_cache_max_gb', 2.0,
    'At start, the least recently used entries of the compilation cache (compiled programs and '
    'train steps) are removed until it holds at most this many GB; 0: no limit (partial files '
    'that killed writers left still go). A local cache only: a remote one (gs://) is left as it '
    'is.')
_VERBOSE = flags.DEFINE_bool(
    'verbose', False, 'Show the tracebacks and library errors behind a one-line error.')
flags.mark_flags_as_required(['workdir'])


def compilation_cache_dir(flag: str | None, environ: Mapping[str, str]) -> str | None:
  """The persistent compilation cache's directory for --compilation_cache=`flag` (None: not
  given) and the environment; None: no cache. A user directory by default, not the workdir: one
  cache serves every run of the same programs, and a workdir may be a bucket or a shared disk."""
  if flag is not None:
    return None if flag.strip().lower() in ('', 'none') else os.path.expanduser(flag)
  if environ.get('JAX_COMPILATION_CACHE_DIR'):
    return environ['JAX_COMPILATION_CACHE_DIR']
  user_cache = environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(user_cache, 'cyclegan_jax', 'jax')


def enable_compilation_cache(directory: str | None) -> None:
  """Reuse compiled programs across runs (a resumed run starts in seconds, not a minute); only
  those that took a second or more to compile are stored. None: turns the cache off."""
  import jax
  jax.config.update('jax_enable_compilation_cache', directory is not None)
  if directory is not None:
    jax.config.update('jax_compilation_cache_dir', directory)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 1.0)


def limit_compilation_cache(directory: str | None, max_gb: float) -> None:
  """Prunes a local cache to `max_gb` (cache_limit; 0: no limit, yet abandoned partial files
  still go); no cache or a remote one: nothing."""
  if directory and '://' not in directory:
    from cyclegan_jax import cache_limit
    cache_limit.prune(directory, int(max_gb * 1e9) if max_gb > 0 else None)


def _start_distributed(workdir: str):
  """jax.distributed, with a watch that ends this process soon after a peer dies. jax's own
  heartbeat check (which aborts with a C++ stack trace) is given a minute longer."""
  import jax
  from jax._src import distributed
  from cyclegan_jax import faults
  jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                             heartbeat_timeout_seconds=int(_PEER_TIMEOUT.value) + 60)
  return faults.PeerWatch(distributed.global_state.client, jax.process_index(),
                          jax.process_count(), _PEER_TIMEOUT.value, workdir).start()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  from cyclegan_jax import faults
  faults.quiet_library_logs(_VERBOSE.value)
  from cyclegan_jax.models import convolution
  convolution.set_impl(_CONV_IMPL.value)
  cache = compilation_cache_dir(_COMPILATION_CACHE.value, os.environ)
  enable_compilation_cache(cache)
  limit_compilation_cache(cache, _COMPILATION_CACHE_MAX_GB.value)
  if _MODE.value == 'translate':
    if not _INPUT.value or not _OUTPUT.value:
      raise app.UsageError('--mode=translate needs --input and --output')
    from cyclegan_jax import translate
    return translate.run_command(_WORKDIR.value, _DIRECTION.value, _INPUT.value, _OUTPUT.value)
  if _MODE.value == 'export':
    if not _OUTPUT.value:
      raise app.UsageError('--mode=export needs --out')
    from cyclegan_jax import export
    return export.run_command(_WORKDIR.value, _DIRECTION.value, _OUTPUT.value)
  if _CONFIG.value is None:
    raise app.UsageError(f'--config is required for --mode={_MODE.value}')
  import jax
  peers = _start_distributed(_WORKDIR.value) if _DISTRIBUTED.value else None
  logging.info('process %d of %d; %d local devices of %d: %s', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count(),
               jax.local_devices())
  from cyclegan_jax import ablation, checkpointing, evaluation, families, parallel, train
  run = {'train': train.train_and_evaluate, 'evaluate': evaluation.evaluate,
         'ablation': ablation.run}[_MODE.value]
  try:
    families.check_config(_CONFIG.value)
    parallel.check_shared_workdir(_WORKDIR.value)
    run(_CONFIG.value, _WORKDIR.value)
    if peers:
      peers.stop()
  except (FloatingPointError, checkpointing.CheckpointMismatchError,
          checkpointing.NoReadableCheckpointError, faults.WriteError, ValueError,
          FileNotFoundError) as e:
    if _VERBOSE.value:
      raise
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
  from cyclegan_jax import host_memory
  host_memory.use_huge_pages()
  app.run(main, flags_parser=_parse_flags)
