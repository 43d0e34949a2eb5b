"""main's persistent compilation cache: its directory from --compilation_cache and the
environment, and that a run with it on stores compiled programs there and with it off, none."""

import os
import pathlib
import subprocess
import sys

import pytest

from cyclegan_jax import main

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
from cyclegan_jax import main
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
