"""main's persistent compilation cache: its directory from --compilation_cache and the
environment, that a run with it on stores compiled programs there and with it off, none, and
that it is pruned to --compilation_cache_max_gb, least recently used first (cache_limit)."""

import os
import pathlib
import subprocess
import sys
import time

import pytest

from cyclegan_jax import cache_limit, main, step_cache

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_the_directory_from_the_flag_and_the_environment():
  home = os.path.expanduser('~')
  assert main.compilation_cache_dir(None, {}) == f'{home}/.cache/cyclegan_jax/jax'
  assert main.compilation_cache_dir(None, {'XDG_CACHE_HOME': '/x'}) == '/x/cyclegan_jax/jax'
  env = {'XDG_CACHE_HOME': '/x', 'JAX_COMPILATION_CACHE_DIR': '/j'}
  assert main.compilation_cache_dir(None, env) == '/j'
  assert main.compilation_cache_dir('/d', env) == '/d'
  assert main.compilation_cache_dir('~/c', {}) == f'{home}/c'
  for off in ('', 'none', 'None', ' none '):
    assert main.compilation_cache_dir(off, env) is None


# A program that compiles in well under the 1 s that main asks of a cached one, so this lowers it.
_COMPILE = """
import os, sys
import jax
from cyclegan_jax import cache_limit, main, step_cache
main.enable_compilation_cache(main.compilation_cache_dir(sys.argv[1] if sys.argv[1:] else None,
                                                         os.environ))
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
jax.jit(lambda x: x * 2 + 1)(jax.numpy.ones(3)).block_until_ready()
"""


def compile_once(tmp_path, *flag, **environ):
  env = {k: v for k, v in os.environ.items() if k != 'JAX_COMPILATION_CACHE_DIR'}
  env.update(environ, JAX_PLATFORMS='cpu', HOME=str(tmp_path / 'home'))
  subprocess.run([sys.executable, '-c', _COMPILE, *flag], cwd=ROOT, env=env, check=True,
                 timeout=120)


def files(path):
  return [p for p in pathlib.Path(path).rglob('*') if p.is_file()]


@pytest.mark.slow
def test_on_by_default_in_the_user_cache_or_the_environments_and_off_with_none(tmp_path):
  compile_once(tmp_path, XDG_CACHE_HOME=str(tmp_path / 'xdg'))
  assert files(tmp_path / 'xdg' / 'cyclegan_jax' / 'jax')
  compile_once(tmp_path)  # No XDG_CACHE_HOME: ~/.cache.
  assert files(tmp_path / 'home' / '.cache' / 'cyclegan_jax' / 'jax')
  compile_once(tmp_path, JAX_COMPILATION_CACHE_DIR=str(tmp_path / 'env'))
  assert files(tmp_path / 'env')
  compile_once(tmp_path, 'none', JAX_COMPILATION_CACHE_DIR=str(tmp_path / 'env_off'),
               XDG_CACHE_HOME=str(tmp_path / 'xdg_off'))
  assert not files(tmp_path / 'env_off') and not files(tmp_path / 'xdg_off')


def _entry(path, size, used, accessed=None):
  """A cache file of `size` bytes last written at `used` (and read at `accessed`)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(b'x' * size)
  os.utime(path, (accessed or used, used))
  return path


def _cache(root):
  """JAX's entries a (oldest), b (written long ago but read last) and c, a train step between
  them, and files that are no entries."""
  _entry(root / 'jit_a-cache', 100, used=1_000)
  _entry(root / 'jit_a-atime', 8, used=1_000)
  _entry(root / 'jit_b-cache', 200, used=500, accessed=9_000)
  _entry(root / 'jit_c-cache', 150, used=4_000)
  _entry(root / step_cache.FOLDER / 'k.step', 300, used=2_000)
  _entry(root / '.lockfile', 0, used=10)
  _entry(root / 'notes.txt', 5_000, used=10)
  return root


def names(root):
  return sorted(str(p.relative_to(root)) for p in files(root))


def test_pruning_removes_the_least_recently_used_entries_until_under_the_limit(tmp_path):
  root = _cache(tmp_path)
  # 750 bytes of entries: a (100, with its -atime), then the step (300) go; c and b (350) stay.
  assert cache_limit.prune(root, 400) == 400
  assert names(root) == ['.lockfile', 'jit_b-cache', 'jit_c-cache', 'notes.txt']
  assert cache_limit.prune(root, 350) == 0
  assert cache_limit.prune(root, 349) == 150  # c was used before b was read.
  assert names(root) == ['.lockfile', 'jit_b-cache', 'notes.txt']


def test_pruning_removes_partial_steps_that_killed_writers_left(tmp_path):
  """A partial file untouched for over an hour is removed whatever the limit; one being
  written now is not, and neither counts as an entry."""
  root = _cache(tmp_path)
  now = time.time()
  _entry(root / step_cache.FOLDER / 'k.step.123.partial', 70, used=now - 3700)
  _entry(root / step_cache.FOLDER / 'k.step.456.partial', 40, used=now - 60)
  assert cache_limit.prune(root, 10_000) == 70
  assert 'train_steps/k.step.123.partial' not in names(root)
  assert 'train_steps/k.step.456.partial' in names(root)
  assert cache_limit.prune(root, 0) == 750  # Every entry goes; the live partial is none.
  assert names(root) == ['.lockfile', 'notes.txt', 'train_steps/k.step.456.partial']


def test_main_prunes_a_local_cache_only_and_zero_means_no_limit(tmp_path):
  root = _cache(tmp_path)
  _entry(root / step_cache.FOLDER / 'k.step.123.partial', 70, used=time.time() - 3700)
  main.limit_compilation_cache(None, 1e-7)
  main.limit_compilation_cache('gs://a-bucket/jax', 1e-7)  # Remote: never listed.
  assert len(names(root)) == 8
  main.limit_compilation_cache(str(root), 0)  # No limit: only the abandoned partial file goes.
  assert len(names(root)) == 7 and 'train_steps/k.step.123.partial' not in names(root)
  main.limit_compilation_cache(str(root), 400e-9)
  assert names(root) == ['.lockfile', 'jit_b-cache', 'jit_c-cache', 'notes.txt']
