"""Make JAX see 8 CPU devices before anything initialises a backend, so pmap tests can run, and
give the whole session one persistent compilation cache: every xdist worker and every
subprocess a test starts inherits it, so a program several tests build is compiled once.

In-process tests compile far more than they run, so XLA optimises their programs less
(`--xla_backend_optimization_level=0`: a third less compile time for the tiny CycleGAN step).
PyTorch (the reference checks) runs one thread: the other worker holds the second core, and
torch's OpenMP threads wait on each other when they share one (JAX's thread pool ignores it)."""

import os
import shutil
import tempfile

if 'PYTEST_XDIST_WORKER' not in os.environ and 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  os.environ['JAX_COMPILATION_CACHE_DIR'] = tempfile.mkdtemp(prefix='cyclegan_jax_tests_')
  _OWN_CACHE = os.environ['JAX_COMPILATION_CACHE_DIR']
else:
  _OWN_CACHE = None
os.environ.setdefault(
    'XLA_FLAGS', '--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0')
os.environ.setdefault('CUDA_VISIBLE_DEVICES', '')
os.environ.setdefault('OMP_NUM_THREADS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update('jax_num_cpu_devices', 8)
jax.config.update('jax_platforms', 'cpu')


@pytest.fixture(scope='session')
def cache():
  """The session's compilation cache, for subprocess runs: compiles after the first are fast."""
  return os.environ['JAX_COMPILATION_CACHE_DIR']


def pytest_unconfigure(config):
  if _OWN_CACHE and not hasattr(config, 'workerinput'):
    shutil.rmtree(_OWN_CACHE, ignore_errors=True)
