"""Host memory: the trim of freed heap pages, and glibc's malloc asking for transparent huge pages
(the environment that asks, the command starting itself again with it, and the page faults it
saves)."""

import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

from cyclegan_jax import host_memory
from cyclegan_jax.benchmarks import input as input_benchmark

ROOT = pathlib.Path(__file__).resolve().parents[1]
LINUX = pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc and /proc only')
ASKS = 'glibc.malloc.hugetlb=1'
# Where this machine's C library and kernel take the request (this VM and CI's: glibc 2.36,
# transparent huge pages on `madvise`); elsewhere use_huge_pages leaves the process alone.
APPLIES = host_memory.huge_pages_environment(
    {}, host_memory._glibc(), host_memory._thp_mode()) is not None
needs_huge_pages = pytest.mark.skipif(not APPLIES, reason='needs glibc >= 2.35 and THP madvise')


@LINUX
def test_release_freed_returns_freed_heap_pages_to_the_os():
  blocks = [bytearray(16 * 1024) for _ in range(16 * 1024)]  # 256 MiB of heap (not mmap) blocks.
  pin = bytearray(16 * 1024)  # Above them on the heap: freeing them cannot shrink its top.
  del blocks
  before = input_benchmark.memory_mib()['VmRSS']
  assert host_memory.release_freed()
  assert before - input_benchmark.memory_mib()['VmRSS'] >= 128  # MiB handed back.
  del pin


def test_the_environment_asks_for_huge_pages_beside_other_tunables():
  environ = {'PATH': '/bin', 'GLIBC_TUNABLES': 'glibc.malloc.arena_max=2'}
  asked = host_memory.huge_pages_environment(environ, 'glibc 2.36', 'madvise')
  assert asked == {'PATH': '/bin', 'GLIBC_TUNABLES': f'glibc.malloc.arena_max=2:{ASKS}'}
  assert environ['GLIBC_TUNABLES'] == 'glibc.malloc.arena_max=2'  # A copy, not an edit.
  for glibc in ('glibc 2.35', 'glibc 3.0'):
    assert host_memory.huge_pages_environment({}, glibc, 'madvise') == {'GLIBC_TUNABLES': ASKS}


@pytest.mark.parametrize('environ, glibc, thp_mode', [
    ({}, 'glibc 2.34', 'madvise'),  # Before the tunable.
    ({}, None, 'madvise'),  # Not glibc (musl, macOS).
    ({}, 'glibc x.y', 'madvise'),
    ({}, 'glibc 2.36', 'always'),  # The kernel gives them anyway.
    ({}, 'glibc 2.36', 'never'),
    ({}, 'glibc 2.36', None),  # No THP in this kernel.
    ({'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=0'}, 'glibc 2.36', 'madvise'),  # Opted out.
    ({'GLIBC_TUNABLES': ASKS}, 'glibc 2.36', 'madvise'),  # Already asked: no second start.
])
def test_nothing_to_change_gives_none(environ, glibc, thp_mode):
  assert host_memory.huge_pages_environment(environ, glibc, thp_mode) is None


def _python(code: str, tunables: str | None) -> str:
  env = {k: v for k, v in os.environ.items() if k != 'GLIBC_TUNABLES'}
  env.update({'GLIBC_TUNABLES': tunables} if tunables is not None else {})
  result = subprocess.run([sys.executable, '-c', textwrap.dedent(code)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout


@LINUX
@needs_huge_pages
@pytest.mark.slow
def test_use_huge_pages_starts_the_same_process_again_once_with_them():
  out = _python("""
      import os, sys
      from cyclegan_jax import host_memory
      print(os.getpid(), host_memory.huge_pages_in_use(), sys.argv[1:], flush=True)
      host_memory.use_huge_pages()
      print(os.getpid(), host_memory.huge_pages_in_use(), os.environ['GLIBC_TUNABLES'])
      """, tunables=None).splitlines()
  pid = out[0].split()[0]
  # Started, started again in the same process (the pid and arguments kept), then ran on.
  assert out == [f'{pid} False []', f'{pid} True []', f'{pid} True {ASKS}']


@LINUX
@needs_huge_pages
@pytest.mark.slow
def test_huge_pages_take_far_fewer_page_faults_for_the_same_work():
  """A 64 MiB result per call, above glibc's largest threshold for mapping allocations apart:
  mapped afresh each call, as the train step's buffers are. Minor page faults per call."""
  code = """
      import resource
      import jax, jax.numpy as jnp
      f = jax.jit(lambda x: x * 2.0 + 1.0)
      x = jnp.ones((4096, 4096))
      f(x).block_until_ready()
      before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
      for _ in range(10):
        f(x).block_until_ready()
      print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
      """
  small_pages = float(_python(code, 'glibc.malloc.hugetlb=0'))
  huge_pages = float(_python(code, ASKS))
  assert small_pages >= 64 * 2**20 / 4096 * 0.9  # About one fault per 4 KiB page of the result.
  assert huge_pages < small_pages / 8, (huge_pages, small_pages)
