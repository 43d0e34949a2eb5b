"""step_cache: a restarted run loads its compiled step without tracing it, and runs it as the
step it compiled; the key moves with every input of tracing; a bad file is compiled over; CPU
steps compile with XLA's memory-optimised scheduler, to the same bits in less memory; the log
says what each start spent on its step."""

import functools
import logging
import os
import pathlib
import re
import subprocess
import sys
import uuid
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import test as test_config
from cyclegan_jax import families, parallel, step_cache
from cyclegan_jax.models import convolution
from tests.helpers import host_tree
from tests.runs import assert_bit_identical

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def folder(tmp_path, monkeypatch):
  """An empty step folder. JAX's own cache stays the session's but takes nothing from these
  tests: a step it supplied would not be kept (the last test)."""
  folder = tmp_path / 'train_steps'
  monkeypatch.setattr(step_cache, 'directory', lambda: folder)
  min_compile_time = jax.config.jax_persistent_cache_min_compile_time_secs
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 1e9)
  yield folder
  jax.config.update('jax_persistent_cache_min_compile_time_secs', min_compile_time)


def _counting(fn, traces):
  """`fn`, noting each trace (Python runs only then, never when a compiled step runs)."""
  def counted(*args, **kwargs):
    traces.append(1)
    return fn(*args, **kwargs)
  return counted


def _unseen_by_jax_cache(step):
  """`step`, with a constant of its own in its metrics: a program that no earlier test can have
  left in JAX's cache, which would supply it, and then it is not kept (the last test)."""
  nonce = np.float32(uuid.uuid4().int % 2**20)

  def marked(*args):
    state, metrics = step(*args)
    return state, {**metrics, 'nonce': nonce}
  return marked


def _tiny_step(traces):
  return parallel.pmap_step(_counting(lambda s, x: ({'w': s['w'] + x.sum()}, {'m': x.mean()}),
                                      traces))


def _tiny_args(width=3, dtype=jnp.float32):
  state = parallel.replicate({'w': np.ones(width, dtype)})
  return state, parallel.device_put_sharded(parallel.shard_batch(np.ones((8, 4), dtype)))


@pytest.mark.slow  # A whole-step compile that no cache may serve.
def test_a_restart_loads_the_train_step_untraced_and_it_runs_as_compiled(folder):
  config = test_config.get_config()
  family = families.get(config)
  models = family.create_models(config, 8)
  template = family.create_train_state(config, models, jax.random.key(config.seed))
  rng = np.random.default_rng(0)
  batch = parallel.device_put_sharded(parallel.shard_batch(
      {d: rng.uniform(-1, 1, (8, 32, 32, 3)).astype(np.float32) for d in family.domains}))
  built_from = (config.to_json_best_effort(), 8, 1.0)
  marked_step = _unseen_by_jax_cache(functools.partial(family.train_step, models=models,
                                                       config=config))
  traces = []
  outputs = []
  for _ in range(2):  # The first compiles and stores; the second, after a "restart", loads.
    jax.clear_caches()
    p_step = parallel.pmap_step(_counting(marked_step, traces))
    state = parallel.replicate(template)
    compiled = step_cache.compile_step(p_step, (state, batch), built_from)
    new_state, metrics = compiled(state, batch)
    outputs.append(jax.device_get((new_state.replace(rng=jax.random.key_data(new_state.rng)),
                                   metrics)))
    assert all(x.is_deleted() for x in jax.tree.leaves(state.params))  # Donated, loaded or not.
  assert len(traces) == 1
  assert [p.name for p in folder.iterdir()] == [f'{step_cache.key((state, batch), built_from)}'
                                                '.step']
  assert_bit_identical(*outputs)


def test_the_key_moves_with_every_input_of_tracing(monkeypatch):
  args = _tiny_args()
  base = step_cache.key(args, ('config', 1.0))
  assert step_cache.key(_tiny_args(), ('config', 1.0)) == base  # New arrays, same signature.
  changed = {
      'built_from': step_cache.key(args, ('config', 0.5)),
      'shape': step_cache.key(_tiny_args(width=4), ('config', 1.0)),
      'dtype': step_cache.key(_tiny_args(dtype=jnp.bfloat16), ('config', 1.0)),
  }
  with convolution.using('xla' if convolution.current_impl() != 'xla' else 'cpu'):
    changed['conv impl'] = step_cache.key(args, ('config', 1.0))
  monkeypatch.setenv('XLA_FLAGS', os.environ['XLA_FLAGS'] + ' --xla_cpu_enable_fast_math=false')
  changed['XLA_FLAGS'] = step_cache.key(args, ('config', 1.0))
  monkeypatch.undo()
  precision = jax.config.jax_default_matmul_precision
  jax.config.update('jax_default_matmul_precision', 'highest')
  try:
    changed['jax setting'] = step_cache.key(args, ('config', 1.0))
  finally:
    jax.config.update('jax_default_matmul_precision', precision)
  monkeypatch.setattr(step_cache, 'source_digest', lambda: 'an edited package')
  changed['source'] = step_cache.key(args, ('config', 1.0))
  assert len({base, *changed.values()}) == 1 + len(changed), changed


def test_the_source_digest_sees_every_edit(tmp_path):
  (tmp_path / 'models').mkdir()
  (tmp_path / 'train.py').write_text('steps = 1\n')
  (tmp_path / 'models' / 'net.py').write_text('width = 8\n')
  before = step_cache.source_digest(tmp_path)
  (tmp_path / 'models' / 'net.py').write_text('width = 9\n')
  edited = step_cache.source_digest(tmp_path)
  (tmp_path / 'models' / 'net.py').rename(tmp_path / 'models' / 'other.py')
  renamed = step_cache.source_digest(tmp_path)
  (tmp_path / 'notes.txt').write_text('not code')
  assert len({before, edited, renamed}) == 3
  assert step_cache.source_digest(tmp_path) == renamed


def test_a_damaged_step_file_is_compiled_again_and_replaced(folder, caplog):
  args = _tiny_args()
  traces = []
  step_cache.compile_step(_tiny_step(traces), args, 'tiny')
  (path,) = folder.iterdir()
  path.write_bytes(b'not a step')
  jax.clear_caches()
  compiled = step_cache.compile_step(_tiny_step(traces), _tiny_args(), 'tiny')
  assert len(traces) == 2
  assert f'the cached train step {path} cannot be loaded (UnpicklingError' in caplog.text
  assert 'compiling it instead' in caplog.text
  np.testing.assert_array_equal(compiled(*_tiny_args())[0]['w'], np.full((8, 3), 5.0))
  jax.clear_caches()
  step_cache.compile_step(_tiny_step(traces), _tiny_args(), 'tiny')
  assert len(traces) == 2  # The file written over the damaged one loads.


def test_a_loaded_step_is_marked_used_and_one_pruned_meanwhile_is_compiled(folder, caplog):
  """cache_limit prunes the least recently used: loading a step must count as a use; a step
  that another process pruned between the check and the read is compiled, without a warning."""
  traces = []
  step_cache.compile_step(_tiny_step(traces), _tiny_args(), 'tiny')
  (path,) = folder.iterdir()
  os.utime(path, (1_000, 1_000))
  jax.clear_caches()
  step_cache.compile_step(_tiny_step(traces), _tiny_args(), 'tiny')
  assert len(traces) == 1 and path.stat().st_mtime > 1_000
  args = _tiny_args()
  with mock.patch.object(pathlib.Path, 'read_bytes', side_effect=FileNotFoundError(path)):
    assert step_cache.load(folder, path.stem, args) is None
  assert 'cannot be loaded' not in caplog.text


def test_a_start_says_what_its_step_cost_and_where_it_is_kept(folder, caplog):
  caplog.set_level(logging.INFO)
  traces = []
  step_cache.compile_step(_tiny_step(traces), _tiny_args(), 'tiny')
  kept = re.escape(f'; kept in {folder} for the next start')
  assert 'compiling the train step' in caplog.text
  assert re.search(r'train step compiled by XLA in \d+\.\d s' + kept, caplog.text)
  caplog.clear()
  jax.clear_caches()
  step_cache.compile_step(_tiny_step(traces), _tiny_args(), 'tiny')
  assert re.search(rf'train step loaded from {re.escape(str(folder))} in \d+\.\d s', caplog.text)
  assert 'compiling' not in caplog.text and len(traces) == 1
  caplog.clear()
  jax.clear_caches()  # Another key; a step that cannot be kept is not said to be.
  with mock.patch.object(step_cache.serialize_executable, 'serialize',
                         side_effect=OSError('No space left on device')):
    step_cache.compile_step(_tiny_step(traces), _tiny_args(), 'tiny, again')
  assert 'could not keep the compiled train step' in caplog.text
  assert re.search(r'train step compiled by XLA in \d+\.\d s\n', caplog.text)
  assert 'kept in' not in caplog.text


def test_nothing_is_kept_while_the_compilation_cache_is_off():
  enabled = jax.config.jax_enable_compilation_cache
  jax.config.update('jax_enable_compilation_cache', False)
  try:
    assert step_cache.directory() is None
    traces = []
    compiled = step_cache.compile_step(_tiny_step(traces), _tiny_args(), 'tiny')
  finally:
    jax.config.update('jax_enable_compilation_cache', enabled)
  np.testing.assert_array_equal(compiled(*_tiny_args())[1]['m'], np.ones(8))
  assert len(traces) == 1


def test_cpu_steps_get_the_memory_optimised_scheduler_unless_xla_flags_name_one(monkeypatch):
  scheduler = {'xla_cpu_scheduler_type': 'CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED'}
  monkeypatch.setenv('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
  assert step_cache.compiler_options() == scheduler
  monkeypatch.setenv('XLA_FLAGS', '--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_DEFAULT')
  assert step_cache.compiler_options() is None  # The user's choice: XLA reads it from the flags.
  monkeypatch.delenv('XLA_FLAGS')
  assert step_cache.compiler_options() == scheduler
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  assert step_cache.compiler_options() is None


@pytest.mark.slow
def test_the_scheduled_cyclegan_step_needs_less_memory_and_computes_the_same_bits():
  config = test_config.get_config()
  family = families.get(config)
  models = family.create_models(config, 1)
  host_state = jax.device_get(family.create_train_state(config, models, jax.random.key(0)))
  rng = np.random.default_rng(0)
  size, batch = config.data.crop_size, parallel.host_batch_size(config.batch_size)
  batches = [{d: rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)
              for d in family.domains} for _ in range(2)]
  put = lambda b: parallel.device_put_sharded(parallel.shard_batch(b))
  step = parallel.pmap_step(functools.partial(family.train_step, models=models, config=config))
  lowered = step.lower(parallel.replicate(host_state), put(batches[0]))
  default, scheduled = lowered.compile(), step_cache.compile_lowered(lowered)

  temp = lambda compiled: compiled.memory_analysis().temp_size_in_bytes
  assert temp(scheduled) < 0.8 * temp(default)  # Measured: 3.1 MB against 5.0 MB.
  results = []
  for compiled in (default, scheduled):
    state = parallel.replicate(host_state)
    for b in batches:
      state, metrics = compiled(state, put(b))
    results.append(host_tree((state, metrics)))
  assert_bit_identical(results[0], results[1])


# A process that compiles (or loads) a small step with an iota in it through the step folder of
# the JAX cache argv[1], runs it and prints its result and whether it traced the step (as a run
# does before a compile, be it XLA's or JAX's cache's). The cache keeps every compile here.
_RUN_A_STEP = """
import sys
import jax, jax.numpy as jnp, numpy as np
from cyclegan_jax import main, parallel, step_cache
main.enable_compilation_cache(sys.argv[1])
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
traced = []
def step(s, x):
  traced.append(True)
  return {'w': s['w'] * jnp.arange(3.0) + x.sum()}, x.mean()
p_step = parallel.pmap_step(step)
args = (parallel.replicate({'w': np.ones(3, np.float32)}),
        parallel.device_put_sharded(parallel.shard_batch(np.ones((2, 4), np.float32))))
print(jax.device_get(step_cache.compile_step(p_step, args, 'tiny')(*args)[0]['w']).tolist(),
      bool(traced))
"""


def _run_a_step(cache):
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  run = subprocess.run([sys.executable, '-c', _RUN_A_STEP, str(cache)], cwd=ROOT, timeout=120,
                       env=dict(env, JAX_PLATFORMS='cpu'), capture_output=True, text=True)
  assert run.returncode == 0, run.stderr
  result, traced = run.stdout.strip().rsplit(' ', 1)
  return result, traced == 'False'  # Loaded from the step folder.


@pytest.mark.slow
def test_only_a_step_xla_compiled_is_kept_never_one_jax_cache_supplied(tmp_path):
  """A step that JAX's cache supplied, serialised again, would load in the next process and
  fail when run; so it is not kept, and the next start goes through JAX's cache again."""
  folder = tmp_path / 'cache' / step_cache.FOLDER
  expected = str([[8.0, 9.0, 10.0]])  # One device: w * [0, 1, 2] + 8.
  assert _run_a_step(tmp_path / 'cache') == (expected, False)  # Compiled, kept in both caches.
  assert _run_a_step(tmp_path / 'cache') == (expected, True)
  for path in folder.iterdir():
    path.unlink()
  assert _run_a_step(tmp_path / 'cache') == (expected, False)  # JAX's cache supplies it.
  assert not list(folder.iterdir())
  assert _run_a_step(tmp_path / 'cache') == (expected, False)
