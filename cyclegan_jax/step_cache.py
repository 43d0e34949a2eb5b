"""Compiled train steps kept on disk, so a restarted run loads its step without tracing it, and
the XLA options they are compiled with.

JAX's persistent compilation cache spares XLA's compile but not tracing and lowering, which it
needs to compute its key: about half of a cached start of the default step. Here the key is
computed from everything that goes into tracing instead: this package's source, the library
versions, JAX's settings, XLA_FLAGS, the conv impl, the devices, the arguments' shapes, dtypes
and shardings, and what the caller built the step from (the config and the values its models
were made with). The executable is stored beside JAX's cache, in its `train_steps` folder, and
only while that cache is on (`--compilation_cache=none` turns both off).

A code edit outside this package that changes the traced program without changing a library's
version (an editable install of jax or flax, a monkeypatch) is not seen by the key: clear the
folder after one. Loading a file deserialises an executable, so the folder must be trusted as
JAX's cache is.
"""

import hashlib
import importlib.metadata
import os
import pathlib
import pickle
import sys
import time
from typing import Any, Sequence

from absl import logging
from etils import epath
import jax
from jax.experimental import serialize_executable

from cyclegan_jax import visualize
from cyclegan_jax.models import convolution

FOLDER = 'train_steps'
LIBRARIES = ('jax', 'jaxlib', 'flax', 'optax', 'numpy', 'ml_dtypes')
ENVIRONMENT = ('XLA_FLAGS', 'LIBTPU_INIT_ARGS')
CACHE_HIT = '/jax/compilation_cache/cache_hits'
# XLA:CPU's memory-optimised scheduler orders the step's ops so that fewer activations are live
# at once: the same arithmetic, bit for bit, in far less memory (README, Compile options).
CPU_SCHEDULER = 'CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED'


def compiler_options() -> dict[str, str] | None:
  """XLA options for the train step: on CPU, CPU_SCHEDULER, unless XLA_FLAGS names a scheduler
  (`--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_DEFAULT` gives XLA's own back)."""
  if jax.default_backend() != 'cpu' or 'xla_cpu_scheduler_type' in os.environ.get('XLA_FLAGS', ''):
    return None
  return {'xla_cpu_scheduler_type': CPU_SCHEDULER}


def compile_lowered(lowered: jax.stages.Lowered) -> jax.stages.Compiled:
  """The lowered train step compiled by XLA (or read from JAX's cache) with compiler_options."""
  return lowered.compile(compiler_options=compiler_options())


def directory() -> epath.Path | None:
  """Where steps are kept: inside JAX's persistent compilation cache; None while it is off."""
  cache = jax.config.jax_compilation_cache_dir
  if not jax.config.jax_enable_compilation_cache or not cache:
    return None
  return epath.Path(cache) / FOLDER


def source_digest(package: pathlib.Path = pathlib.Path(__file__).parent) -> str:
  """A digest of every Python file of `package` (their paths and contents)."""
  digest = hashlib.sha256()
  for path in sorted(package.rglob('*.py')):
    digest.update(str(path.relative_to(package)).encode() + b'\0' + path.read_bytes() + b'\0')
  return digest.hexdigest()


def _signature(args: Sequence[Any]) -> tuple:
  leaves, tree = jax.tree.flatten(tuple(args))
  return str(tree), tuple((x.shape, str(x.dtype), bool(getattr(x, 'weak_type', False)),
                           repr(getattr(x, 'sharding', None))) for x in leaves)


def key(args: Sequence[Any], built_from: Any) -> str:
  """The step's key for `args` (the step's arguments) and `built_from` (a repr-able value
  holding all the step's closure was made from)."""
  devices = jax.local_devices()
  parts = (
      source_digest(),
      sys.version,
      tuple((name, importlib.metadata.version(name)) for name in LIBRARIES),
      tuple(sorted((name, repr(value)) for name, value in jax.config.values.items())),
      tuple((name, os.environ.get(name)) for name in ENVIRONMENT),
      convolution.current_impl(),
      devices[0].client.platform_version, jax.process_count(),
      tuple((d.platform, d.device_kind, d.id, d.process_index) for d in devices),
      _signature(args),
      built_from,
  )
  return hashlib.sha256(repr(parts).encode()).hexdigest()


def load(folder: epath.Path, step_key: str, args: Sequence[Any]) -> jax.stages.Compiled | None:
  """The step stored under `step_key`; None if there is none or it cannot be loaded (logged)."""
  path = folder / f'{step_key}.step'
  if not path.exists():
    return None
  try:
    executable, out_tree = pickle.loads(path.read_bytes())
    compiled = serialize_executable.deserialize_and_load(
        executable, jax.tree.structure((tuple(args), {})), out_tree)
  except FileNotFoundError:  # Pruned by another process since `exists` (cache_limit).
    return None
  except Exception as e:  # A damaged or foreign file: compile instead.
    logging.warning('the cached train step %s cannot be loaded (%s: %s); compiling it instead',
                    path, type(e).__name__, str(e).splitlines()[0] if str(e) else '')
    return None
  try:
    os.utime(os.fspath(path))  # Marks it used: cache_limit prunes the least recently used.
  except OSError:  # A remote cache (gs://) keeps its own times.
    pass
  return compiled


def store(folder: epath.Path, step_key: str, compiled: jax.stages.Compiled) -> bool:
  """Keeps `compiled` under `step_key`, and says whether it could. A failure only costs the next
  start its time: logged."""
  try:
    executable, _, out_tree = serialize_executable.serialize(compiled)
    folder.mkdir(parents=True, exist_ok=True)
    visualize.write_atomically(folder / f'{step_key}.step', pickle.dumps((executable, out_tree)))
  except Exception as e:
    logging.warning('could not keep the compiled train step in %s (%s: %s); the next start '
                    'compiles it again', folder, type(e).__name__, e)
    return False
  return True


def compile_step(p_step: Any, args: Sequence[Any], built_from: Any) -> jax.stages.Compiled:
  """`p_step` (a pmapped step) compiled for `args`: loaded from the folder if it holds it,
  else lowered, compiled (through JAX's cache) and, if XLA compiled it, stored there."""
  start = time.perf_counter()
  folder = directory()
  step_key = key(args, built_from) if folder is not None else None
  compiled = load(folder, step_key, args) if folder is not None else None
  if compiled is not None:
    logging.info('train step loaded from %s in %.1f s', folder, time.perf_counter() - start)
    return compiled
  logging.info('compiling the train step')  # The one long silence of a first start.
  compiled, compiled_here = _compile(p_step, args)
  kept = folder is not None and compiled_here and store(folder, step_key, compiled)
  how = 'compiled by XLA' if compiled_here else "traced and read from JAX's persistent cache"
  where = f'; kept in {folder} for the next start' if kept else ''
  logging.info('train step %s in %.1f s%s', how, time.perf_counter() - start, where)
  return compiled


def _compile(p_step: Any, args: Sequence[Any]) -> tuple[jax.stages.Compiled, bool]:
  """`p_step` compiled for `args`, and whether XLA compiled it here rather than JAX's cache
  supplying it: an XLA:CPU executable loaded from that cache and serialised again loads in the
  next process but fails when run (NOT_FOUND: Function ... not found), so only the first is
  kept."""
  hits = []

  def note_hit(event: str, **_) -> None:
    if event == CACHE_HIT:
      hits.append(event)

  jax.monitoring.register_event_listener(note_hit)
  try:
    compiled = compile_lowered(p_step.lower(*args))
  finally:
    jax.monitoring.unregister_event_listener(note_hit)
  return compiled, not hits
